"""The mixture engine: every structure in every gradient, bounded compiles, held-out, devices, resume."""

import functools
import os
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

import lopt
from lopt.meta.mixture_engine import MixtureEngine, _estimate
from lopt.meta.trainer import MetaTrainer
from lopt.meta.truncation import ConstantHorizon

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _dist():
    return lopt.tasks.mixture({"quadratic": 1.0, "losg": 1.0}, num_structures=2)


def _engine(**changes):
    dist = _dist()
    options = {"truncation": ConstantHorizon(10), "num_tasks": 2, "std": 0.05, "unroll_length": 5,
               "configs_per_bucket": 2, "redraw_every": 2, "heldout_per_bucket": 1, "eval_steps": 10,
               "normalizer_steps": 10}
    options.update(changes)
    structures = [dist.structures("quadratic")[0], dist.structures("losg")[0]]
    return MixtureEngine(lopt.learned.get("learnable_adam", lr=0.01), dist, structures, **options)


@pytest.fixture(scope="module")
def engine():
    return _engine()


def leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_every_gradient_averages_every_structure(engine):
    theta = engine.lopt.init(jax.random.key(0))
    states = engine.init(theta, key=jax.random.key(1))
    assert len({lopt.tasks.structure_key(b.structure) for b in engine.buckets}) == 2
    key = jax.random.key(2)
    grad, _, metrics = engine.estimate(theta, states, key=key)
    assert int(metrics["buckets"]) == 2
    keys = jax.random.split(key, 2)
    singles = [program(est, theta, s, k)[0]
               for program, est, s, k in zip(engine._compiled, engine._estimators, states, keys)]
    for g, a, b in zip(leaves(grad), leaves(singles[0]), leaves(singles[1])):
        np.testing.assert_allclose(g, (a + b) / 2, rtol=1e-5, atol=1e-7)
    for single in singles:  # both structures contribute
        assert any(np.any(x != 0) for x in leaves(single))


def test_redraws_reuse_the_compiled_programs_and_never_draw_heldout(engine):
    theta = engine.lopt.init(jax.random.key(0))
    states = engine.init(theta, key=jax.random.key(1))
    held = set(engine.heldout_configs())
    seen = set()
    compiles = []
    listener = lambda name, *a, **k: compiles.append(name) if "backend_compile" in name else None
    for step in range(100):
        if step == 6:  # the first redraws have traced their small helpers
            jax.monitoring.register_event_duration_secs_listener(listener)
        engine.set_step(step)
        for configs in engine.training_configs():
            seen.update(configs)
            assert not held & set(configs)
        _, states, metrics = engine.estimate(theta, states, key=jax.random.key(step))
    jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []  # 94 outer steps and 47 re-draws, no new program
    assert len(engine._compiled) == 2
    assert len(seen) > 4 * 2  # more configs than one pool holds
    assert np.isfinite(float(metrics["meta_loss"]))


def test_the_inactive_half_before_the_first_redraw_needs_no_normaliser_program(monkeypatch):
    import dataclasses

    from lopt.meta import mixture_engine

    def refuse(*args, **kwargs):
        raise AssertionError("set-up ran an initial-loss program")

    monkeypatch.setattr(mixture_engine, "initial_losses", refuse)
    engine = _engine(redraw_every=0)  # the set-up fits the first halves and compiles nothing else
    theta = engine.lopt.init(jax.random.key(0))
    states = engine.init(theta, key=jax.random.key(1))
    key = jax.random.key(2)
    grad, _, metrics = engine.estimate(theta, states, key=key)
    # Episodes draw active configs only: NaN normalisers on the inactive half change nothing.
    c = engine.configs_per_bucket
    for i, estimator in enumerate(engine._estimators):
        problem = estimator.problem
        poisoned = dataclasses.replace(problem, initial_loss=problem.initial_loss.at[c:].set(np.nan),
                                       best_loss=problem.best_loss.at[c:].set(np.nan))
        engine._estimators[i] = dataclasses.replace(estimator, problem=poisoned)
    engine._placed = list(engine._estimators)
    poisoned_grad, _, poisoned_metrics = engine.estimate(theta, states, key=key)
    for a, b in zip(leaves(grad), leaves(poisoned_grad)):
        np.testing.assert_array_equal(a, b)
    assert float(metrics["meta_loss"]) == float(poisoned_metrics["meta_loss"])


def test_programs_compile_during_the_setup_and_are_used(monkeypatch):
    calls = []
    original = MixtureEngine._compile_bucket

    def counted(self, index, *args):
        calls.append(index)
        return original(self, index, *args)

    monkeypatch.setattr(MixtureEngine, "_compile_bucket", counted)
    engine = _engine()
    assert engine._ahead is not None  # started before the normalisers were fitted
    theta = engine.lopt.init(jax.random.key(0))
    states = engine.init(theta, key=jax.random.key(1))
    engine.compile(theta, states, key=jax.random.key(2))
    assert sorted(calls) == [0, 1]  # one program per bucket, none compiled again
    grad, _, _ = engine.estimate(theta, states, key=jax.random.key(3))
    keys = jax.random.split(jax.random.key(3), 2)
    direct = [jax.jit(_estimate)(e, theta, s, k)[0] for e, s, k in zip(engine._estimators, states, keys)]
    for g, a, b in zip(leaves(grad), leaves(direct[0]), leaves(direct[1])):
        np.testing.assert_allclose(g, (a + b) / 2, rtol=1e-5, atol=1e-7)
    # programs started for other shapes are not used: compile() compiles for what it is given
    other = _engine()
    for future in other._ahead[1]:
        future.result()
    other._ahead = (("other shapes",), other._ahead[1])
    calls.clear()
    other.compile(theta, states, key=jax.random.key(2))
    assert sorted(calls) == [0, 1]  # compiled again
    other.estimate(theta, states, key=jax.random.key(3))


_EXIT_DURING_COMPILE = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, "tests/meta")
    from lopt.meta.mixture_engine import MixtureEngine
    from test_mixture_engine import _engine

    def slow(self, *args):
        time.sleep(120)

    MixtureEngine._compile_bucket = slow
    _engine()
    print("SET-UP-DONE", flush=True)
""")


def test_leaving_during_the_set_up_does_not_wait_for_the_compiles():
    """Ctrl-C (or any exit) while the bucket programs compile in the background ends the process
    at once: the compile threads do not hold it."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _EXIT_DURING_COMPILE], env=env, cwd=ROOT, capture_output=True,
                          text=True, check=False, timeout=110)
    assert "SET-UP-DONE" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert time.perf_counter() - start < 100  # not held by the 120 s "compiles"


def test_heldout_evaluation_reports_every_family(engine):
    theta = engine.lopt.init(jax.random.key(0))
    result = engine.evaluate(theta, key=jax.random.key(0))
    evaluator = engine.heldout_evaluator()
    assert engine.heldout_evaluator() is evaluator
    held = evaluator.pools()
    families = {h.family: h.informative.any() for h in held}
    assert set(families) == {"quadratic", "losg"}
    assert families["quadratic"]  # Adam solves the quadratic; losg barely moves in 10 steps
    assert {f"heldout/{f}" for f, kept in families.items() if kept} == {k for k in result if k.startswith("heldout/")}
    assert result["heldout_configs"] == 2 and np.isfinite(result["heldout_normalized_loss"])
    assert result["heldout_uninformative"] == sum(int((~h.informative).sum()) for h in held)
    # one program per held-out structure, compiled once (in threads) and reused for another theta
    programs = evaluator.programs(theta, jax.random.key(0))
    assert len(programs) == 2 and evaluator.programs(theta, jax.random.key(5)) is programs
    other = jax.tree.map(lambda x: x + 0.1, theta)
    again = engine.evaluate(other, key=jax.random.key(3))
    scores = {h.name: np.asarray(evaluator.fn(h.pool, h.initial, h.best, other, jax.random.fold_in(jax.random.key(3), i),
                                              num_steps=engine.eval_steps)[0])
              for i, h in enumerate(held)}  # the plain jitted path gives the same scores
    masks = {h.name: h.informative for h in held}
    expected = [float(v[masks[k]].mean()) for k, v in scores.items() if masks[k].any()]
    np.testing.assert_allclose(again["heldout_normalized_loss"], np.mean(expected), rtol=1e-6)

    # a config whose normaliser measured nothing is run but left out of every mean
    target = next(h for h in held if h.informative.any())
    name, saved = target.name, target.informative
    try:
        target.informative = np.zeros_like(saved)
        result = engine.evaluate(other, key=jax.random.key(3))
    finally:
        target.informative = saved
    rest = [float(v[masks[k]].mean()) for k, v in scores.items() if k != name and masks[k].any()]
    assert result["heldout_configs"] == 2 and result["heldout_uninformative"] == 1 + again["heldout_uninformative"]
    if rest:
        np.testing.assert_allclose(result["heldout_normalized_loss"], np.mean(rest), rtol=1e-6)
    else:  # nothing left to average: no score rather than a noisy one
        assert np.isnan(result["heldout_normalized_loss"])


def test_bad_settings_name_the_fix():
    with pytest.raises(ValueError, match="redraw_every"):
        _engine(redraw_every=1)
    with pytest.raises(ValueError, match="num_tasks"):
        _engine(num_tasks=0)


def test_linear_episode_weighting_reaches_every_bucket_program():
    engine, linear = _engine(), _engine(episode_weighting="linear")  # fresh: the fixture's pools move
    assert [e.problem.episode_weighting for e in linear._estimators] == ["linear", "linear"]
    theta = engine.lopt.init(jax.random.key(0))
    _, _, plain = engine.estimate(theta, engine.init(theta, key=jax.random.key(1)), key=jax.random.key(2))
    _, _, weighted = linear.estimate(theta, linear.init(theta, key=jax.random.key(1)), key=jax.random.key(2))
    np.testing.assert_allclose(weighted["train_loss"], plain["train_loss"], rtol=1e-6)  # same tasks, same steps
    assert not np.allclose(weighted["meta_loss_per_bucket"], plain["meta_loss_per_bucket"])
    with pytest.raises(ValueError, match="episode_weighting='last'"):
        _engine(episode_weighting="last")


def _mixture_config(tmp_path, **trainer):
    cfg = lopt.meta.load_config("taskset", [
        'task.mixture={"quadratic": 1, "losg": 1}', "task.num_buckets=2", "task.configs_per_bucket=2",
        "task.redraw_every=2", "lopt.name=learnable_sgdm", 'lopt.config={"lr": 0.05}', "estimator.num_tasks=2",
        "estimator.std=0.05", "estimator.unroll_length=5", "truncation.kind=constant", "truncation.horizon=10",
        "normalizer.num_steps=10", "trainer.eval_every=3", "trainer.eval_steps=10", "trainer.outer_steps=6",
        "trainer.checkpoint_every=3"])
    for key, value in trainer.items():
        setattr(cfg.trainer, key, value)
    return cfg


def test_resume_is_exact_and_warm_start_loads_theta(tmp_path):
    full = MetaTrainer(_mixture_config(tmp_path), tmp_path / "full").run()
    MetaTrainer(_mixture_config(tmp_path), tmp_path / "part").run(stop_after=3)
    resumed = MetaTrainer(_mixture_config(tmp_path), tmp_path / "part").run(resume=True)
    for a, b in zip(leaves(full["theta"]), leaves(resumed["theta"])):
        np.testing.assert_array_equal(a, b)
    rows = lopt.meta.read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 7)) and all(r["buckets"] == 2 for r in rows)
    assert (tmp_path / "full" / "theta_best.safetensors").exists()
    warm = _mixture_config(tmp_path, init_from=str(tmp_path / "full" / "warm_start.safetensors"))
    started = MetaTrainer(warm, tmp_path / "warm").initial_state()
    for a, b in zip(leaves(started["theta"]), leaves(full["theta"])):
        np.testing.assert_array_equal(a, b)
    from_theta = _mixture_config(tmp_path, init_from=str(tmp_path / "full" / "theta.safetensors"))
    started = MetaTrainer(from_theta, tmp_path / "warm2").initial_state()
    for a, b in zip(leaves(started["theta"]), leaves(full["theta"])):
        np.testing.assert_array_equal(a, b)


_SHARDED = textwrap.dedent("""
    import jax, numpy as np, lopt
    from lopt.meta.mixture_engine import MixtureEngine, _estimate
    from lopt.meta.truncation import ConstantHorizon
    assert jax.device_count() == 4, jax.devices()
    dist = lopt.tasks.mixture({"quadratic": 1.0, "losg": 1.0}, num_structures=2)
    structures = [dist.structures("quadratic")[0], dist.structures("losg")[0]]
    def run(mesh):
        engine = MixtureEngine(lopt.learned.get("learnable_sgdm", lr=0.05), dist, structures,
            truncation=ConstantHorizon(10), num_tasks=4, std=0.05, unroll_length=5, configs_per_bucket=2,
            redraw_every=2, heldout_per_bucket=0, normalizer_steps=10, mesh=mesh)
        theta = engine.lopt.init(jax.random.key(0))
        states = engine.place(engine.init(theta, key=jax.random.key(1)))
        for step in range(4):
            engine.set_step(step)
            grad, states, _ = engine.estimate(theta, states, key=jax.random.key(step))
            theta = jax.tree.map(lambda t, g: t - 0.05 * g, theta, grad)
        sharding = jax.tree.leaves(states[0])[-1].sharding
        return [np.asarray(x) for x in jax.tree.leaves(theta)], sharding
    one, _ = run(None)
    four, sharding = run(jax.make_mesh((4,), ("tasks",), axis_types=(jax.sharding.AxisType.Auto,)))
    assert len(sharding.device_set) == 4, sharding
    for a, b in zip(one, four):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    print("SHARDED-OK")
""")


def test_four_fake_devices_follow_the_one_device_trajectory():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _SHARDED], env=env, cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=600)
    assert "SHARDED-OK" in proc.stdout, proc.stdout + proc.stderr


def test_unit_bucket_weighting_gives_every_structure_an_equal_vote():
    from lopt.meta.bucket_gradients import combine as _combine

    metric = {"meta_loss": 0.0, "train_loss": 0.0, "diverged": 0, "resets": 0, "nonfinite_grad": 0}
    grads = [{"w": np.array([3.0, 4.0])}, {"w": np.array([0.0, -0.5])}]  # norms 5 and 0.5
    mean, summary = _combine(grads, [metric, metric])
    np.testing.assert_allclose(mean["w"], [1.5, 1.75])
    unit, summary = _combine(grads, [metric, metric], weighting="unit")
    np.testing.assert_allclose(unit["w"], [(0.6 + 0.0) / 2, (0.8 - 1.0) / 2], rtol=1e-6)
    assert float(summary["bucket_grad_norm_max"]) == pytest.approx(5.0)
    assert float(summary["bucket_grad_norm_min"]) == pytest.approx(0.5)
    assert float(summary["bucket_conflicts"]) == 1.0  # (0.6, 0.8) . (0, -1) < 0, both ways
    # gradient surgery: each unit row loses its component along the other; then the mean
    a, b = np.array([0.6, 0.8]), np.array([0.0, -1.0])
    a_proj, b_proj = a - (a @ b) * b, b - (b @ a) * a
    surgery, summary = _combine(grads, [metric, metric], weighting="pcgrad")
    np.testing.assert_allclose(surgery["w"], (a_proj + b_proj) / 2, rtol=1e-6, atol=1e-7)
    assert float(np.dot(surgery["w"], a)) >= -1e-7 and float(np.dot(surgery["w"], b)) >= -1e-7  # hurts neither
    agree = [{"w": np.array([1.0, 0.0])}, {"w": np.array([1.0, 1.0])}]  # no conflict: pcgrad == unit
    np.testing.assert_allclose(_combine(agree, [metric, metric], weighting="pcgrad")[0]["w"],
                               _combine(agree, [metric, metric], weighting="unit")[0]["w"], rtol=1e-6)
    with pytest.raises(ValueError, match="bucket_weighting='sum'"):
        _engine(bucket_weighting="sum")


def test_a_fixed_heldout_seed_keeps_the_validation_configs_across_run_seeds():
    a, b = _engine(seed=1, heldout_seed=0), _engine(seed=2, heldout_seed=0)
    assert a.heldout_configs() == b.heldout_configs()
    assert a.training_configs() != b.training_configs()
    assert _engine(seed=0).heldout_configs() == a.heldout_configs()  # heldout_seed=None: the run's seed


def test_bucket_gradients_examples_run():
    import doctest

    from lopt.meta import bucket_gradients

    result = doctest.testmod(bucket_gradients)
    assert result.attempted > 0 and result.failed == 0


def test_programs_from_the_program_cache_give_the_traced_programs_results(tmp_path):
    from lopt.meta.program_cache import ProgramCache, available

    if not available():
        pytest.skip("jax.export serialisation needs the flatbuffers package")
    reference = _engine(normalizer_steps=12)
    theta = reference.lopt.init(jax.random.key(0))
    results, engines = [], []
    # Each engine is made after the one before has its programs: an engine starts compiling (and
    # looking up) its bucket programs in background threads when it is made, so the second, made
    # beside the first, could look for a program before the first had written it (a CI run, stop 54).
    cached = functools.partial(_engine, normalizer_steps=12)
    for make in (lambda: reference, lambda: cached(program_cache=ProgramCache(tmp_path)),
                 lambda: cached(program_cache=ProgramCache(tmp_path))):
        engine = make()
        states = engine.init(theta, key=jax.random.key(1))
        results.append(engine.estimate(theta, states, key=jax.random.key(2)))  # waits for its programs
        engines.append(engine)
    first, second = engines[1:]
    # two fit programs and two bucket programs: exported by the first engine, read back by the second
    assert (first.program_cache.misses, first.program_cache.hits) == (4, 0)
    assert (second.program_cache.misses, second.program_cache.hits) == (0, 4)
    assert second._first_fits == reference._first_fits
    for other in results[1:]:  # the same numbers as the programs traced directly
        for a, b in zip(leaves(results[0]), leaves(other)):
            np.testing.assert_array_equal(a, b)
    assert [c.flops for c in second.program_flops()] == [c.flops for c in reference.program_flops()]
    assert all(p.program.record["flops"]["flops"] > 0 for p in second._compiled)  # counted once, recorded
    with pytest.raises(ValueError, match="compiled for arguments shaped"):
        second._compiled[0].program(theta)

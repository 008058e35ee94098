"""The campaign runner: sessions chain through the committed state; a killed session is recoverable."""

from __future__ import annotations

import gzip
import json
import os

import jax
import numpy as np
import pytest

from lopt import checkpoint
from lopt.pretrained import adoption, campaign
from lopt.pretrained.breadth import validation_structures
from lopt.pretrained.session_files import keep_snapshots
from lopt.pretrained.validate import validate

TINY = ["estimator.num_tasks=2", "estimator.unroll_length=5", "truncation.min_horizon=10",
        "truncation.max_horizon=20", "normalizer.num_steps=10", "trainer.eval_steps=10", "task.configs_per_bucket=1",
        "task.heldout_per_bucket=1", "trainer.outer_steps=3", "trainer.eval_every=0", "task.redraw_every=0"]


def _new_campaign(path):
    """A campaign folder with no session yet, training only the committed campaign's quadratic structures."""
    path.mkdir(exist_ok=True)
    with open("campaign/state.json", encoding="utf-8") as f:
        first = validation_structures(json.load(f))  # the campaign's first structures (one per family)
    quadratic = [s for s in first if s["task"]["family"] == "quadratic"]
    (path / "state.json").write_text(json.dumps({"sessions": [], "structures": quadratic, "outer_steps": 0,
                                                 "gpu_minutes": 0.0}))
    return path


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return _new_campaign(tmp_path_factory.mktemp("campaign"))


def test_sessions_continue_from_the_committed_state_and_a_killed_one_is_recorded(state_dir, tmp_path):
    first = campaign.run_session(str(state_dir), str(tmp_path / "one"), minutes=5, overrides=TINY, reserve_minutes=0)
    session = first["sessions"][-1]
    assert first["outer_steps"] == session["outer_steps"] == 3 and session["start_outer_step"] == 0
    warm = tmp_path / "one" / "run" / "warm_start.safetensors"
    assert session["warm_start_digest"] == checkpoint.stored_digest(str(warm))
    assert first["cpu_minutes"] > 0 and first["gpu_minutes"] == 0.0
    snapshot = tmp_path / "one" / "run" / "thetas" / "theta-000003.safetensors"  # trainer.theta_history
    assert checkpoint.read_metadata(str(snapshot))["extra"]["outer_steps"] == 3
    # adopt it as the campaign's state, then run a second session from there
    adoption.adopt(str(state_dir), str(tmp_path / "one"), device="cpu")
    kept = gzip.decompress((state_dir / "logs" / "session-01-cpu-metrics.jsonl.gz").read_bytes())
    assert kept == (tmp_path / "one" / "run" / "metrics.jsonl").read_bytes()
    assert not (state_dir / "logs" / "session-01-cpu.log").exists()  # no campaign.log came back with it
    second = campaign.run_session(str(state_dir), str(tmp_path / "two"), minutes=5, overrides=TINY, reserve_minutes=0)
    assert second["sessions"][-1]["start_outer_step"] == 3 and second["outer_steps"] == 6
    assert second["sessions"][-1]["seed"] == 2  # a new seed per session: new variants are drawn
    # a session killed before writing state.json: adopt records it from its run folder
    os.remove(tmp_path / "two" / "state.json")
    (tmp_path / "campaign.log").write_text("[campaign] set-up 7 s; meta-training\n")
    recorded = adoption.adopt(str(state_dir), str(tmp_path / "two"), device="cpu", note="killed at the limit")
    last = recorded["sessions"][-1]
    assert recorded["outer_steps"] == 6 and last["outer_steps"] == 3 and last["note"] == "killed at the limit"
    assert last["setup_seconds"] == 7.0 and not last["on_gpu"]
    assert last["warm_start_digest"] == checkpoint.stored_digest(str(state_dir / "warm_start.safetensors"))
    assert json.loads((state_dir / "state.json").read_text())["outer_steps"] == 6
    # the snapshots are kept under their campaign step (session two's step 3 is campaign step 6)
    assert sorted(os.listdir(state_dir / "thetas")) == ["theta-000003.safetensors", "theta-000006.safetensors"]
    assert checkpoint.read_metadata(str(state_dir / "thetas" / "theta-000006.safetensors"))["extra"] == {
        "campaign_outer_steps": 6}
    assert (state_dir / "logs" / "session-02-cpu-metrics.jsonl.gz").exists()
    assert (state_dir / "logs" / "session-02-cpu.log").read_text() == "[campaign] set-up 7 s; meta-training\n"
    with pytest.raises(ValueError, match="do not extend"):  # the first session's folder is stale now
        adoption.adopt(str(state_dir), str(tmp_path / "one"))
    with pytest.raises(ValueError, match="no metrics"):
        empty = tmp_path / "empty"
        empty.mkdir()
        (empty / "metrics.jsonl").write_text("")
        campaign._session_entry(recorded, str(empty), seed=1, seconds=1, setup_seconds=1, flops=None, overrides=[],
                                families=[], device="cpu", on_gpu=False)


def test_a_session_run_from_an_earlier_state_is_adopted_as_a_branch(tmp_path):
    from lopt.pretrained.shipping import lineage_sessions

    state_dir = _new_campaign(tmp_path / "state")
    campaign.run_session(str(state_dir), str(tmp_path / "one"), minutes=5, overrides=TINY, reserve_minutes=0)
    adoption.adopt(str(state_dir), str(tmp_path / "one"), device="cpu")
    # both from the state after session one, as two calls from one commit (both draw seed 2: the outer
    # learning rates differ so that the two do not train the same theta on the CPU)
    for name, lr in (("two", 1e-3), ("three", 2e-3)):
        campaign.run_session(str(state_dir), str(tmp_path / name), minutes=5, overrides=[*TINY, f"outer.learning_rate={lr}"],
                             reserve_minutes=0)
    adoption.adopt(str(state_dir), str(tmp_path / "two"), device="cpu")
    two_warm = checkpoint.stored_digest(str(state_dir / "warm_start.safetensors"))
    before = (state_dir / "state.json").read_text()
    with pytest.raises(ValueError, match="--branch adopts it"):
        adoption.adopt(str(state_dir), str(tmp_path / "three"), device="cpu")
    assert (state_dir / "state.json").read_text() == before  # refused: nothing changed
    adopted = adoption.adopt(str(state_dir), str(tmp_path / "three"), device="cpu", branch=True)
    last = adopted["sessions"][-1]
    assert adopted["outer_steps"] == 9 and len(adopted["sessions"]) == 3
    assert last["start_outer_step"] == 6 and last["branched_from_outer_step"] == 3
    assert adopted["cpu_minutes"] == pytest.approx(sum(s["seconds"] for s in adopted["sessions"]) / 60, abs=0.02)
    rewound = adopted["rewinds"][-1]
    assert (rewound["at_outer_step"], rewound["to_campaign_step"]) == (6, 3)
    assert "beside session 2," in rewound["note"] and "drew the seed of session 2" in rewound["note"]
    assert checkpoint.stored_digest(str(state_dir / rewound["kept_warm_start"])) == two_warm  # session two kept
    assert checkpoint.stored_digest(str(state_dir / "warm_start.safetensors")) == last["warm_start_digest"]
    assert last["warm_start_digest"] == checkpoint.stored_digest(str(tmp_path / "three" / "run" / "warm_start.safetensors"))
    # its snapshots take the counter's steps 7..9; the theta at 9 descends from sessions one and three only
    assert max(os.listdir(state_dir / "thetas")) == "theta-000009.safetensors"
    assert [s["start_outer_step"] for s in lineage_sessions(adopted, 9)] == [0, 6]
    assert (state_dir / "logs" / "session-03-cpu-metrics.jsonl.gz").exists()
    with pytest.raises(ValueError, match="do not extend"):  # session two is the past now, not a state to adopt
        adoption.adopt(str(state_dir), str(tmp_path / "two"), device="cpu")
    with pytest.raises(ValueError, match="already in the campaign"):  # nor a branch to adopt twice
        adoption.adopt(str(state_dir), str(tmp_path / "two"), device="cpu", branch=True)


def test_validation_scores_are_deterministic_and_tell_thetas_apart(state_dir, capsys):
    lopt_ = __import__("lopt").learned.get("nominal")
    theta = lopt_.init(jax.random.key(0))
    slow = {**theta, "log_lr": theta["log_lr"] - 3.0}  # a 20x smaller step: clearly worse in 10 steps
    scores = validate({"a": theta, "b": theta, "slow": slow}, state_dir=str(state_dir), steps=10, variants=1)
    paired = "vs_first/heldout_normalized_loss"
    assert paired not in scores["a"] and scores["b"].pop(paired) == 0.0  # the same theta, paired with the first
    assert scores["a"] == scores["b"]
    assert scores["slow"][paired] == pytest.approx(scores["slow"]["heldout_normalized_loss"]
                                                   - scores["a"]["heldout_normalized_loss"], rel=1e-12)
    structures = [v for k, v in scores["a"].items() if k.startswith("heldout_structure/")]
    assert structures and np.mean(structures) == pytest.approx(scores["a"]["heldout_normalized_loss"], rel=1e-12)
    assert np.isfinite(scores["a"]["heldout_normalized_loss"])
    assert scores["slow"]["heldout_normalized_loss"] > scores["a"]["heldout_normalized_loss"]
    progress = capsys.readouterr().err  # a long validation says where it is, one line per theta and seed
    assert "[validate] 10 steps: theta 3/3 (slow) seed 1/1: " in progress
    assert f"{scores['slow']['heldout_normalized_loss']:.4f} in " in progress
    with pytest.raises(ValueError, match="at least one theta"):
        validate({}, state_dir=str(state_dir))


def test_the_validation_command_exits_cleanly_after_printing_its_scores(state_dir, tmp_path):
    # The engine used to start compiling the (unused) training programs in daemon threads; the
    # process then aborted at exit (status 134) while one was still inside XLA.
    import subprocess
    import sys

    nominal = __import__("lopt").learned.get("nominal")
    path = str(tmp_path / "theta.safetensors")
    __import__("lopt").learned.save_theta(path, nominal, nominal.init(jax.random.key(0)))
    out = subprocess.run([sys.executable, "-m", "lopt.pretrained.validate", path, "--state", str(state_dir),
                          "--steps", "10", "--variants", "1"], check=False, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert path in out.stdout and "quadratic=" in out.stdout


def test_validation_over_several_seeds_is_the_mean_of_each_seed(state_dir, monkeypatch):
    from lopt.pretrained import validate as validate_module

    theta = __import__("lopt").learned.get("nominal").init(jax.random.key(0))
    options = {"state_dir": str(state_dir), "steps": 10, "variants": 1}
    first = validate({"a": theta}, **options)["a"]
    both = validate({"a": theta}, seeds=2, **options)["a"]
    with pytest.raises(ValueError, match="seeds=0"):
        validate_module.validation_keys(0)
    second_key = validate_module.validation_keys(2)[1]
    monkeypatch.setattr(validate_module, "validation_keys", lambda seeds: [second_key])
    second = validate({"a": theta}, **options)["a"]
    assert first["heldout_normalized_loss"] != second["heldout_normalized_loss"]  # the seed matters
    for name, value in both.items():
        if name.startswith("se/"):  # two seeds: stdev |a - b| / sqrt(2), over sqrt(2)
            base = name[len("se/"):]
            assert value == pytest.approx(abs(first[base] - second[base]) / 2, rel=1e-9, abs=1e-12), name
        else:
            assert value == pytest.approx((first[name] + second[name]) / 2, rel=1e-9, abs=1e-12), name
    assert "se/heldout_normalized_loss" in both and "se/heldout_normalized_loss" not in first


def test_a_validating_session_scores_its_references_and_the_campaign_keeps_its_best_theta(tmp_path):
    state_dir = _new_campaign(tmp_path / "state")
    sets = [s for s in TINY if not s.startswith("trainer.eval_every")] + ["trainer.eval_every=2"]
    new = campaign.run_session(str(state_dir), str(tmp_path / "one"), minutes=5, overrides=sets, reserve_minutes=0)
    session = new["sessions"][-1]
    references = session["validation_references"]
    assert set(references) == {"initial theta (= Adam 1e-3)", "warm start"}
    # no warm start yet: the session starts from the initial theta, so both references are one score
    assert references["warm start"] == references["initial theta (= Adam 1e-3)"]
    scores = [row["heldout_normalized_loss"] for row in session["heldout"]]
    assert [row["step"] for row in session["heldout"]] == [2, 3]  # every 2 steps and the final theta
    adopted = adoption.adopt(str(state_dir), str(tmp_path / "one"), device="cpu")
    assert adopted["best"]["score"] == pytest.approx(min(scores))
    assert adopted["best"]["campaign_step"] == [2, 3][int(np.argmin(scores))] and adopted["best"]["session"] == 1
    best = state_dir / "best_theta.safetensors"
    assert checkpoint.stored_digest(str(best)) == checkpoint.stored_digest(
        str(tmp_path / "one" / "run" / "theta_best.safetensors"))
    assert json.loads((state_dir / "state.json").read_text())["best"] == adopted["best"]


def test_validation_uses_the_campaigns_fixed_heldout_variants(state_dir):
    state = campaign._read_state(str(state_dir))
    configs = []
    for session_seed in (1, 2):  # two sessions: same validation configs, never among the training draws
        cfg = campaign.campaign_config({**state, "sessions": [{}] * (session_seed - 1)}, minutes=1, init_from="",
                                       overrides=[])
        assert cfg.seed == session_seed and cfg.task.heldout_seed == campaign.VALIDATION_SEED
        assert cfg.outer.bucket_weighting == "unit"
        configs.append(cfg)
    from lopt.learned import get as get_lopt
    from lopt.meta.trainer import _mixture_engine
    from lopt.meta.truncation import make_schedule

    engines = [_mixture_engine(c, get_lopt("nominal"), make_schedule("constant", horizon=20), compile_ahead=False)
               for c in configs]  # no training programs: no compile thread left inside XLA at exit (abort 134)
    held = [e.heldout_configs() for e in engines]
    assert held[0] == held[1] and len(held[0]) == campaign.VALIDATION_VARIANTS
    for engine in engines:
        assert not set(held[0]) & {c for half in engine.buckets[0].halves for c in half}


def _campaign_snapshots(folder, steps=(10, 20)):
    """Theta files of a campaign at ``steps`` (a ``campaign_outer_steps`` header) and its state.json."""
    from lopt.learned import get as get_lopt
    from lopt.learned.serialization import save_theta

    lopt_ = get_lopt("nominal")
    paths = {}
    for step in steps:
        paths[step] = str(folder / f"theta-{step:06d}.safetensors")
        save_theta(paths[step], lopt_, lopt_.init(jax.random.key(step)), extra={"campaign_outer_steps": step})
    (folder / "state.json").write_text(json.dumps({"sessions": [], "structures": [], "outer_steps": max(steps)}))
    return paths


def test_record_best_replaces_the_campaign_best_only_with_a_better_score(tmp_path):
    from lopt.learned import get as get_lopt
    from lopt.learned.serialization import save_theta
    from lopt.pretrained.validate import record_best

    lopt_ = get_lopt("nominal")
    paths = list(_campaign_snapshots(tmp_path).values())
    scores = {paths[0]: {"heldout_normalized_loss": 0.5}, paths[1]: {"heldout_normalized_loss": 0.3}}
    assert "new campaign best 0.3000" in record_best(scores, str(tmp_path))
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["best"]["score"] == 0.3 and state["best"]["campaign_step"] == 20
    assert checkpoint.stored_digest(str(tmp_path / "best_theta.safetensors")) == checkpoint.stored_digest(paths[1])
    assert "kept the campaign's best" in record_best({paths[0]: {"heldout_normalized_loss": 0.4}}, str(tmp_path))
    assert json.loads((tmp_path / "state.json").read_text())["best"]["campaign_step"] == 20
    reference = tmp_path / "initial.safetensors"  # scored beside the snapshots, but no campaign theta
    save_theta(reference, lopt_, lopt_.init(jax.random.key(0)))
    line = record_best({str(reference): {"heldout_normalized_loss": 0.1}, paths[0]: {"heldout_normalized_loss": 0.4}},
                       str(tmp_path))
    assert "kept the campaign's best" in line and "0.4000" in line
    assert "no scored file is a campaign theta" in record_best({str(reference): {"heldout_normalized_loss": 0.1}},
                                                                str(tmp_path))
    assert json.loads((tmp_path / "state.json").read_text())["best"]["score"] == 0.3


def test_snapshots_returned_as_a_bundle_are_kept_under_their_campaign_step(tmp_path):
    import tarfile

    from lopt.learned import get as get_lopt
    from lopt.learned.serialization import save_theta

    lopt_ = get_lopt("nominal")
    (tmp_path / "run" / "thetas").mkdir(parents=True)
    for step in (5, 9):
        save_theta(tmp_path / "run" / "thetas" / f"theta-{step:06d}.safetensors", lopt_,
                   lopt_.init(jax.random.key(step)), extra={"outer_steps": step})
    session = tmp_path / "returned"
    session.mkdir()
    with tarfile.open(session / "thetas.tgz", "w:gz") as tar:  # as scripts/campaign_gpu_session.sh returns them
        tar.add(tmp_path / "run" / "thetas", arcname="thetas")
    state_dir = tmp_path / "state"
    written = keep_snapshots(str(session), str(state_dir), start=100)
    assert [os.path.basename(p) for p in written] == ["theta-000105.safetensors", "theta-000109.safetensors"]
    assert keep_snapshots(str(session), str(state_dir), start=100) == []  # never replaced


def test_validation_at_several_lengths_ranks_by_the_mean(monkeypatch):
    from lopt.pretrained import validate as validate_module

    def fake(thetas, *, steps, **options):  # a theta's score grows with the length for "a", shrinks for "b"
        return {label: {"heldout_normalized_loss": {"a": 0.1, "b": 0.5}[label] * (steps / 300) ** (1 if label == "a"
                                                                                                else -1),
                        "heldout/mlp": float(steps)} for label in thetas}

    monkeypatch.setattr(validate_module, "validate", fake)
    rows = validate_module.validate_lengths({"a": None, "b": None}, steps=[300, 1200])
    assert rows["a"]["heldout_normalized_loss"] == pytest.approx((0.1 + 0.4) / 2)
    assert rows["b"]["heldout_normalized_loss"] == pytest.approx((0.5 + 0.125) / 2)
    assert rows["a"]["steps1200/heldout_normalized_loss"] == pytest.approx(0.4)
    assert rows["a"]["heldout/mlp"] == 750.0 and rows["b"]["steps300/heldout/mlp"] == 300.0
    assert validate_module.validate_lengths({"a": None}, steps=[300]) == fake({"a": None}, steps=300)
    for bad in ([], [0], [300, 300]):
        with pytest.raises(ValueError, match="one or more positive lengths"):
            validate_module.validate_lengths({"a": None}, steps=bad)


def test_record_best_compares_only_scores_at_the_same_lengths(tmp_path):
    from lopt.pretrained.validate import record_best

    paths = _campaign_snapshots(tmp_path)
    record_best({paths[10]: {"heldout_normalized_loss": 0.3}}, str(tmp_path))  # at 300 steps
    line = record_best({paths[20]: {"heldout_normalized_loss": 0.2}}, str(tmp_path), steps=[300, 1000])
    assert "scored at [300] steps" in line  # the 300-step best is not compared with a two-length mean
    assert json.loads((tmp_path / "state.json").read_text())["best"]["campaign_step"] == 10
    best = str(tmp_path / "best_theta.safetensors")  # re-scored in the same run: compared, and recorded alike
    line = record_best({best: {"heldout_normalized_loss": 0.45}, paths[20]: {"heldout_normalized_loss": 0.5}},
                       str(tmp_path), steps=[300, 1000])
    assert "kept the campaign's best" in line
    record = json.loads((tmp_path / "state.json").read_text())["best"]
    assert record["score"] == 0.45 and record["steps"] == [300, 1000] and record["campaign_step"] == 10
    assert "new campaign best 0.4000" in record_best({paths[20]: {"heldout_normalized_loss": 0.4}}, str(tmp_path),
                                                      steps=[300, 1000])
    assert json.loads((tmp_path / "state.json").read_text())["best"]["campaign_step"] == 20


def test_record_best_rescores_a_best_recorded_with_another_metric(tmp_path):
    from lopt.pretrained.validate import METRIC, record_best

    paths = _campaign_snapshots(tmp_path)
    record_best({paths[10]: {"heldout_normalized_loss": 0.3}}, str(tmp_path))
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["best"]["metric"] == METRIC
    del state["best"]["metric"]  # a record written before the metric was kept: every config averaged
    (tmp_path / "state.json").write_text(json.dumps(state))
    line = record_best({paths[20]: {"heldout_normalized_loss": 0.25}}, str(tmp_path))
    assert "(all_configs, 1 seeds)" in line and "kept the campaign's best" in line
    best = str(tmp_path / "best_theta.safetensors")
    line = record_best({best: {"heldout_normalized_loss": 0.1}, paths[20]: {"heldout_normalized_loss": 0.25}},
                       str(tmp_path))
    record = json.loads((tmp_path / "state.json").read_text())["best"]
    assert "kept the campaign's best" in line
    assert record["score"] == 0.1 and record["metric"] == METRIC and record["campaign_step"] == 10


def test_validation_scores_each_theta_file_with_its_own_architecture(monkeypatch, tmp_path):
    import lopt
    from lopt.pretrained import validate as validate_module

    files = {}
    for label, arch in {"adam": lopt.learned.NominalLOpt(), "distance": lopt.learned.NominalLOpt(step_size="distance"),
                        "adam2": lopt.learned.NominalLOpt()}.items():
        files[label] = str(tmp_path / f"{label}.safetensors")
        lopt.learned.save_theta(files[label], arch, arch.init(jax.random.key(0)))
    calls = []

    def fake(thetas, *, steps, lopt_, **options):
        calls.append((sorted(thetas), lopt_.step_size))
        return {path: {"heldout_normalized_loss": {"adam": 0.3, "distance": 0.1}[lopt_.step_size]} for path in thetas}

    monkeypatch.setattr(validate_module, "validate", fake)
    scores = validate_module._validate_files(list(files.values()), steps=[300])
    assert sorted(calls) == [(sorted([files["adam"], files["adam2"]]), "adam"), ([files["distance"]], "distance")]
    assert list(scores) == list(files.values())  # in the order given
    assert scores[files["distance"]]["heldout_normalized_loss"] == 0.1


def test_validation_results_keep_each_files_campaign_step(monkeypatch, tmp_path):
    """validate --out records the header's campaign step, so the curve places ``best_theta`` files too."""
    import importlib.util

    import lopt
    from lopt.pretrained import validate as validate_module

    arch = lopt.learned.NominalLOpt()
    best, initial = str(tmp_path / "best_theta.safetensors"), str(tmp_path / "initial_adam1e-3.safetensors")
    lopt.learned.save_theta(best, arch, arch.init(jax.random.key(0)), extra={"campaign_outer_steps": 3779})
    lopt.learned.save_theta(initial, arch, arch.init(jax.random.key(0)))
    monkeypatch.setattr(validate_module, "validate", lambda thetas, *, steps, lopt_, **options: {
        path: {"heldout_normalized_loss": 0.2, "heldout/mlp": 0.2} for path in thetas})
    out = tmp_path / "scores.json"
    assert validate_module.main([best, initial, "--steps", "2000", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["campaign_steps"] == {best: 3779, initial: None}
    spec = importlib.util.spec_from_file_location(
        "validation_plot", os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "pretrained_validation_plot.py"))
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    reference, by_step = plot.collect([str(out)], 2000, validate_module.METRIC)
    assert list(by_step) == [3779] and reference["heldout_normalized_loss"] == 0.2  # the initial theta by its name
    broad, losg = tmp_path / "variants8.json", tmp_path / "losg32.json"
    assert validate_module.main([best, "--steps", "2000", "--variants", "8", "--out", str(broad)]) == 0
    assert validate_module.main([best, "--steps", "2000", "--families", "losg", "--out", str(losg)]) == 0
    assert plot.collect([str(broad), str(losg)], 2000, validate_module.METRIC) == (None, {})  # not comparable
    assert list(plot.collect([str(broad)], 2000, validate_module.METRIC, variants=8)[1]) == [3779]


def test_paired_differences_pool_each_structures_seed_noise():
    from lopt.pretrained.validate import paired_difference

    rng = np.random.default_rng(0)
    seeds, units = 3, 4
    common = rng.normal(0.0, 0.05, (seeds, units))  # what a seed does to both thetas
    ref_units = 0.1 + common
    new_units = ref_units + 0.01 + rng.normal(0.0, 0.002, (seeds, units))

    def rows(values):
        return [{"heldout_normalized_loss": float(v.mean()), **{f"heldout_structure/s{k}": float(v[k])
                                                               for k in range(units)}} for v in values]

    got = paired_difference(rows(new_units), rows(ref_units))
    d = new_units - ref_units
    assert got["vs_first/heldout_normalized_loss"] == pytest.approx(d.mean(), rel=1e-9)
    expected_se = np.sqrt(d.var(axis=0, ddof=1).sum() / seeds) / units
    assert got["se/vs_first/heldout_normalized_loss"] == pytest.approx(expected_se, rel=1e-9)
    # the unpaired spread of either theta's score over seeds is ~25x the paired error here
    assert np.std(new_units.mean(axis=1), ddof=1) / np.sqrt(seeds) > 5 * expected_se
    one = paired_difference(rows(new_units[:1]), rows(ref_units[:1]))
    assert set(one) == {"vs_first/heldout_normalized_loss"}  # one seed: no error estimate
    with pytest.raises(ValueError, match="3 and 2 seeds"):
        paired_difference(rows(new_units), rows(ref_units[:2]))


def test_record_best_compares_with_the_best_rescored_in_the_same_run(tmp_path):
    """A recorded score from an earlier run is replaced by the best's score from this run, so a
    snapshot only becomes the best by beating it under the same conditions."""
    from lopt.pretrained.validate import record_best

    paths = _campaign_snapshots(tmp_path)
    assert "new campaign best 0.3000" in record_best({paths[10]: {"heldout_normalized_loss": 0.3}}, str(tmp_path))
    best = str(tmp_path / "best_theta.safetensors")
    # this run scores the best at 0.45 and a snapshot at 0.4: better than the best here, worse than 0.3 recorded
    line = record_best({best: {"heldout_normalized_loss": 0.45}, paths[20]: {"heldout_normalized_loss": 0.4}},
                       str(tmp_path))
    assert "new campaign best 0.4000" in line
    record = json.loads((tmp_path / "state.json").read_text())["best"]
    assert record["campaign_step"] == 20 and record["score"] == 0.4
    # and the other way: re-scored lower than recorded, a snapshot that beat the old record does not win
    line = record_best({best: {"heldout_normalized_loss": 0.2}, paths[10]: {"heldout_normalized_loss": 0.35}},
                       str(tmp_path))
    assert "kept the campaign's best (0.2)" in line
    assert json.loads((tmp_path / "state.json").read_text())["best"]["campaign_step"] == 20


def test_a_session_whose_warm_start_did_not_come_back_continues_from_its_final_snapshot(tmp_path):
    import shutil
    import tarfile

    from lopt.learned.serialization import load_theta
    from lopt.meta.warm_start import file_optimizer, load_warm_start

    state_dir = _new_campaign(tmp_path / "state")
    pristine = tmp_path / "pristine"
    shutil.copytree(state_dir, pristine)
    campaign.run_session(str(state_dir), str(tmp_path / "one"), minutes=5, overrides=TINY, reserve_minutes=0)
    # as a device call returns it when the file limit dropped the warm start: snapshots bundled, no warm start
    back = tmp_path / "back"
    shutil.copytree(tmp_path / "one", back)
    (back / "run" / "warm_start.safetensors").unlink()
    with tarfile.open(back / "thetas.tgz", "w:gz") as tar:
        tar.add(back / "run" / "thetas", arcname="thetas")
    shutil.rmtree(back / "run" / "thetas")
    # a snapshot of an earlier step would drop steps: refused while the final one is missing
    final = checkpoint.read_metadata(str(tmp_path / "one" / "run" / "thetas" / "theta-000003.safetensors"))
    assert final["extra"]["outer_steps"] == 3
    partial = tmp_path / "partial"
    shutil.copytree(tmp_path / "one", partial)
    (partial / "run" / "warm_start.safetensors").unlink()
    (partial / "run" / "thetas" / "theta-000003.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="final step"):
        adoption.adopt(str(pristine), str(partial), device="cpu")
    assert sorted(os.listdir(pristine)) == ["state.json"]  # refused before anything was written
    adopted = adoption.adopt(str(pristine), str(back), device="cpu")
    assert adopted["outer_steps"] == 3 and "did not come back" in adopted["sessions"][-1]["note"]
    # the warm start is the final snapshot's theta: the next session starts exactly there
    warm = str(pristine / "warm_start.safetensors")
    theta, _, _ = load_warm_start(warm, file_optimizer(warm))
    expected, _ = load_theta(str(tmp_path / "one" / "run" / "thetas" / "theta-000003.safetensors"))
    for a, b in zip(jax.tree.leaves(theta), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert max(os.listdir(pristine / "thetas")) == "theta-000003.safetensors"


def test_widening_adds_new_structures_of_each_family_and_keeps_validation_on_the_old_ones(tmp_path):
    from lopt.pretrained.breadth import widen
    from lopt.tasks.mixture import structure_key

    state_dir = _new_campaign(tmp_path / "c")
    original = json.loads((state_dir / "state.json").read_text())["structures"]
    with pytest.raises(ValueError, match="per_family=0"):
        widen(str(state_dir), per_family=0)
    before = (state_dir / "state.json").read_bytes()
    with pytest.raises(ValueError, match="fewer than per_family=1000"):
        widen(str(state_dir), per_family=1000)
    assert (state_dir / "state.json").read_bytes() == before  # a refused widening changes nothing

    record = widen(str(state_dir), per_family=2, note="breadth")
    state = json.loads((state_dir / "state.json").read_text())
    keys = [structure_key(s) for s in state["structures"]]
    assert record["added"] == 2 and len(state["structures"]) == len(original) + 2
    assert len(set(keys)) == len(keys)  # the new ones are structures the campaign did not train on
    assert all(s["task"]["family"] == "quadratic" for s in state["structures"])
    assert state["validation_structures"] == original and state["widenings"][0]["note"] == "breadth"
    training = campaign.campaign_config(state, minutes=1, init_from="", overrides=[])
    validation = campaign.campaign_config(state, minutes=1, init_from="", overrides=[], validation=True)
    assert training.task.num_buckets == len(original) + 2 and validation.task.structures == original
    widen(str(state_dir), per_family=1)  # a second widening keeps the first one's validation set
    state = json.loads((state_dir / "state.json").read_text())
    assert len(state["structures"]) == len(original) + 3 and state["validation_structures"] == original

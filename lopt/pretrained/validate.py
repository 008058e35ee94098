"""Model selection for the campaign: score several thetas on the same held-out validation configs.

A campaign session on the GPU may end without evaluating (its call's time limit), and the
meta-loss it logs is measured on training episodes at random truncation points, too noisy to
choose which theta to ship. This scores candidate thetas, on any machine, on one fixed set of
*validation* configs: held-out variants of the campaign's training structures (dynamic values
never drawn for training), trained for ``--steps`` inner steps each and normalised by an Adam
grid fitted on the same configs (0 = the best Adam run, 1 = the initial loss). Every theta sees
the same configs and seeds. The held-out benchmark suite (``benchmarks/pretrained_heldout.py``)
stays the test set: do not select on it.

Usage::

    python -m lopt.pretrained.validate campaign/warm_start.safetensors lopt/pretrained/weights/default.safetensors \\
        [--families mlp quadratic] [--steps 300 [1000]] [--variants 2] [--seeds 1] [--out results.json]
        [--record-best campaign]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import jax

from lopt.learned import LearnedOptimizer
from lopt.learned import get as get_lopt
from lopt.meta.warm_start import file_optimizer, load_warm_start
from lopt.pretrained.campaign import (
    VALIDATION_SEED,
    VALIDATION_VARIANTS,
    _read_state,
    _write_state_file,
    campaign_config,
)

__all__ = ["METRIC", "PAIRED_PREFIX", "SE_PREFIX", "combine_lengths", "combine_seeds", "paired_difference",
           "record_best", "validate", "validate_lengths", "validation_keys"]

#: What ``heldout_normalized_loss`` averages; recorded with the campaign's best, whose score is only
#: compared with scores of the same metric. ``"informative_configs"``: configs where tuned Adam
#: lowered the loss by more than 1% (before, every config: ``"all_configs"``, the default of
#: records without the field; one losg validation config with no such run then swung the mean by
#: up to 0.2 between thetas).
METRIC = "informative_configs"


def validation_keys(seeds: int) -> list[jax.Array]:
    """The PRNG keys of ``seeds`` validation runs per config; the first is the campaign's fixed key.

    Example:
        >>> len(validation_keys(3))
        3
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"validation seeds={seeds!r} must be an int >= 1 (1: the campaign's single fixed key).")
    key = jax.random.key(VALIDATION_SEED)
    return [key] + [jax.random.fold_in(key, s) for s in range(1, seeds)]


def validate(thetas: dict[str, Any], *, state_dir: str = "campaign", families: list[str] | None = None,
             steps: int = 300, variants: int = VALIDATION_VARIANTS, seeds: int = 1,
             lopt_: LearnedOptimizer | None = None, paired: bool = True) -> dict[str, dict[str, float]]:
    """Held-out validation scores of each theta (lower is better), on the same configs.

    Args:
        thetas: label -> theta of ``lopt_``.
        state_dir: the campaign folder (its ``state.json`` fixes the structures: those pinned for
            validation when the campaign was widened, else the training structures).
        families: only these training families' structures (default: all).
        steps: inner steps per validation run (and of the Adam grid that normalises it).
        variants: held-out variants per structure.
        seeds: runs per config (batches and data order; :func:`validation_keys`); every value is the
            mean over them. One seed of a noisy structure can decide a ranking: the one informative
            losg config scored 0.23-1.01 for one theta over 6 seeds.
        lopt_: the learned optimizer the thetas belong to (default: the campaign's, ``nominal``
            with its default config).
        paired: add each later theta's :func:`paired_difference` from the first one.

    Returns:
        label -> ``{"heldout_normalized_loss": ..., "heldout/<family>": ..., ...}``, and for every
        theta after the first (with ``paired``) ``vs_first/heldout_normalized_loss``.

    Example:
        >>> import jax, lopt
        >>> from lopt.pretrained.validate import validate
        >>> theta = lopt.learned.get("nominal").init(jax.random.key(0))
        >>> scores = validate({"adam": theta}, families=["quadratic"], steps=20, variants=1)  # doctest: +SKIP
    """
    from lopt.meta.trainer import _mixture_engine
    from lopt.meta.truncation import make_schedule

    if not thetas:
        raise ValueError("validate: pass at least one theta.")
    state = _read_state(state_dir)
    if not state["structures"]:
        raise ValueError(f"{state_dir}/state.json holds no structures; run a campaign session first.")
    cfg = campaign_config(state, minutes=1.0, init_from="", families=families, validation=True, overrides=[
        f"seed={VALIDATION_SEED}", "task.configs_per_bucket=1", "normalizer.num_steps=10",
        f"task.heldout_per_bucket={variants}", f"trainer.eval_steps={steps}", "task.redraw_every=0"])
    lopt_ = get_lopt(cfg.lopt.name) if lopt_ is None else lopt_
    truncation = make_schedule(cfg.truncation.kind, horizon=cfg.truncation.horizon,
                               min_horizon=cfg.truncation.min_horizon, max_horizon=cfg.truncation.max_horizon)
    start = time.perf_counter()
    engine = _mixture_engine(cfg, lopt_, truncation, compile_ahead=False)  # it only evaluates
    keys = validation_keys(seeds)
    evaluator = engine.heldout_evaluator()
    pools = evaluator.pools()  # the validation pools' Adam fits at this length (read from the fit cache if there)
    _progress(f"{steps} steps: validation configs and their Adam fits ready in {time.perf_counter() - start:.0f} s "
              f"({engine.heldout_fits_from_cache} of {len(pools)} pools' fits from the cache)")
    start = time.perf_counter()
    evaluator.programs(next(iter(thetas.values())), keys[0])  # compiled once, for every theta and seed
    _progress(f"{steps} steps: evaluation programs compiled in {time.perf_counter() - start:.0f} s")
    scores, runs = {}, {}
    for index, (label, theta) in enumerate(thetas.items()):
        rows = []
        for seed, key in enumerate(keys):
            start = time.perf_counter()
            rows.append(engine.evaluate(theta, key=key))
            _progress(f"{steps} steps: theta {index + 1}/{len(thetas)} ({label}) seed {seed + 1}/{len(keys)}: "
                      f"{rows[-1]['heldout_normalized_loss']:.4f} in {time.perf_counter() - start:.0f} s")
        scores[label], runs[label] = combine_seeds(rows), rows
    first = next(iter(thetas))
    for label in list(thetas)[1:] if paired else []:
        scores[label].update(paired_difference(runs[label], runs[first]))
    return scores


def _progress(message: str) -> None:
    """One line of progress on stderr (a validation of several thetas runs for many minutes)."""
    print(f"[validate] {message}", file=sys.stderr, flush=True)


#: Prefix of the standard-error keys (``se/heldout_normalized_loss``, ``se/heldout/<family>``).
SE_PREFIX = "se/"


def combine_seeds(rows: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each score over seeds and, with two or more seeds, its standard error
    (sample standard deviation / sqrt(seeds)) under ``se/<key>`` for the overall and per-family
    scores: whether two thetas' difference is more than the seeds' noise.

    Example:
        >>> row = combine_seeds([{"heldout_normalized_loss": 0.1}, {"heldout_normalized_loss": 0.3}])
        >>> round(row["heldout_normalized_loss"], 3), round(row["se/heldout_normalized_loss"], 3)
        (0.2, 0.1)
    """
    out = {name: sum(row[name] for row in rows) / len(rows) for name in rows[0]}
    if len(rows) > 1:
        for name in rows[0]:
            if name == "heldout_normalized_loss" or name.startswith("heldout/"):
                out[SE_PREFIX + name] = statistics.stdev(row[name] for row in rows) / len(rows) ** 0.5
    return out


#: Prefix of a theta's paired difference from the first theta of the same validation
#: (``vs_first/heldout_normalized_loss``; its standard error under ``se/vs_first/...``).
PAIRED_PREFIX = "vs_first/"


def paired_difference(rows: list[dict[str, float]], reference: list[dict[str, float]]) -> dict[str, float]:
    """A theta's overall score minus a reference theta's, seed by seed on the same configs, and with
    two or more seeds the standard error of that difference.

    Both thetas ran the very same configs with the same keys, so what a seed changes for both (its
    batches and data order, which variants come out hard) cancels in the difference: in stop 43 two
    thetas scored -0.003/0.046/-0.006 and -0.005/0.048/-0.008 over three seeds at 1,000 steps, a
    spread of 0.05 between seeds around a difference of 0.002. The standard error pools, over the
    structures the overall score averages (``heldout_structure/<key>``), each structure's
    seed-to-seed variance of the difference: ``sqrt(sum_k var_s(d_ks) / S) / K``.

    Args:
        rows: the theta's per-seed results (:meth:`lopt.meta.mixture_engine.MixtureEngine.evaluate`).
        reference: the reference theta's, for the same seeds in the same order.

    Returns:
        ``{"vs_first/heldout_normalized_loss": mean difference}`` and, with two or more seeds and
        structure scores in both, ``{"se/vs_first/heldout_normalized_loss": its standard error}``.

    Example:
        >>> a = [{"heldout_normalized_loss": 0.10, "heldout_structure/x": 0.0, "heldout_structure/y": 0.20},
        ...      {"heldout_normalized_loss": 0.30, "heldout_structure/x": 0.2, "heldout_structure/y": 0.40}]
        >>> b = [{"heldout_normalized_loss": 0.12, "heldout_structure/x": 0.02, "heldout_structure/y": 0.22},
        ...      {"heldout_normalized_loss": 0.33, "heldout_structure/x": 0.23, "heldout_structure/y": 0.43}]
        >>> d = paired_difference(b, a)
        >>> round(d["vs_first/heldout_normalized_loss"], 4), round(d["se/vs_first/heldout_normalized_loss"], 4)
        (0.025, 0.0035)
    """
    from lopt.meta.heldout_evaluation import STRUCTURE_PREFIX

    if len(rows) != len(reference) or not rows:
        raise ValueError(f"paired_difference: {len(rows)} and {len(reference)} seeds; pair runs of the same seeds.")
    name = "heldout_normalized_loss"
    out = {PAIRED_PREFIX + name: statistics.fmean(r[name] - q[name] for r, q in zip(rows, reference))}
    units = sorted(set.intersection(*({k for k in r if k.startswith(STRUCTURE_PREFIX)} for r in rows + reference)))
    if len(rows) > 1 and units:
        variance = sum(statistics.variance([r[k] - q[k] for r, q in zip(rows, reference)]) for k in units)
        out[SE_PREFIX + PAIRED_PREFIX + name] = (variance / len(rows)) ** 0.5 / len(units)
    return out


def validate_lengths(thetas: dict[str, Any], *, steps: list[int], **options: Any) -> dict[str, dict[str, float]]:
    """:func:`validate` at several training lengths; each score is the mean over the lengths.

    A learned optimizer can win short trainings and lose long ones (or the reverse): the
    campaign's thetas beat Adam 1e-3 on more structures at 1,000 steps than at 300. With one
    length this is :func:`validate`; with several, every key is the mean over the lengths and
    ``steps<N>/<key>`` keeps each length's value.

    Example:
        >>> from lopt.pretrained.validate import validate_lengths
        >>> validate_lengths({}, steps=[])
        Traceback (most recent call last):
        ...
        ValueError: validate_lengths: steps=[]; pass one or more positive lengths, e.g. [300, 1000].
    """
    if not steps or any(int(n) <= 0 for n in steps) or len(set(steps)) != len(steps):
        raise ValueError(f"validate_lengths: steps={list(steps)}; pass one or more positive lengths, e.g. [300, 1000].")
    if len(steps) == 1:
        return validate(thetas, steps=int(steps[0]), **options)
    runs = {n: validate(thetas, steps=int(n), **options) for n in steps}
    return {label: combine_lengths([runs[n][label] for n in steps], steps) for label in thetas}


def combine_lengths(rows: list[dict[str, float]], steps: list[int]) -> dict[str, float]:
    """One theta's scores at several lengths: each key's mean over the lengths (standard errors
    combined as independent: the root of the summed squares over the count), and every length's
    own value under ``steps<N>/<key>``.

    Example:
        >>> row = combine_lengths([{"heldout_normalized_loss": 0.1, "se/heldout_normalized_loss": 0.03},
        ...                        {"heldout_normalized_loss": 0.3, "se/heldout_normalized_loss": 0.04}], [300, 1000])
        >>> round(row["heldout_normalized_loss"], 3), round(row["se/heldout_normalized_loss"], 3)
        (0.2, 0.025)
        >>> row["steps1000/heldout_normalized_loss"]
        0.3
    """
    out = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if key.startswith(SE_PREFIX):
            out[key] = sum(v * v for v in values) ** 0.5 / len(values)
        else:
            out[key] = sum(values) / len(values)
    out.update({f"steps{n}/{key}": value for n, row in zip(steps, rows) for key, value in row.items()})
    return out


def record_best(scores: dict[str, dict[str, float]], state_dir: str, *, steps: list[int] = (300,),
                seeds: int = 1) -> str:
    """Makes the best-scoring file of ``scores`` the campaign's best theta if it beats ``state.json``'s ``best``.

    Only campaign thetas compete: files with a ``campaign_outer_steps`` header (snapshots adopted
    into ``campaign/thetas/`` and the shipped weights have one). Other files scored in the same run (the
    initial theta, a hand-made reference) are references and never become the campaign's best.
    Scores are only compared at the same validation lengths (``steps``, kept in the record),
    ``seeds`` and :data:`METRIC`: when the campaign's best was scored at other lengths or with another metric, it
    must be among ``scores`` (the file ``best_theta.safetensors`` or a copy with the same digest) so
    that it is re-scored alike. Whenever it is among ``scores``, its score from this run replaces the
    recorded one before the comparison: a score from another run is no fixed yardstick (stop 43: the
    best's own 2,000-step score under the same key was 0.032 in one run and 0.046 in another).
    Returns a line saying what was done. The copy keeps the file's bytes (and digest) and the
    snapshot's campaign step is recorded.
    """
    import math
    import shutil

    from lopt import checkpoint

    at = campaign_steps(list(scores))
    candidates = {path: row for path, row in scores.items() if at[path] is not None}
    if not candidates:
        return "kept the campaign's best: no scored file is a campaign theta (no campaign_outer_steps header)"
    path, row = min(candidates.items(), key=lambda item: item[1]["heldout_normalized_loss"])
    score = row["heldout_normalized_loss"]
    state = _read_state(state_dir)
    best = dict(state.get("best") or {})
    steps = [int(n) for n in steps]
    best_file = os.path.join(state_dir, "best_theta.safetensors")
    digest = checkpoint.stored_digest(best_file) if best and os.path.exists(best_file) else None
    rescored = [row for p, row in scores.items() if digest is not None and checkpoint.stored_digest(p) == digest]
    if best and rescored:  # the best scored in this run: compared with this run's score, never a recorded one
        best.update(score=rescored[0]["heldout_normalized_loss"], steps=steps, metric=METRIC, seeds=seeds)
        state["best"] = best
        _write_state_file(state_dir, state)
    elif best and ([int(n) for n in best.get("steps", [300])] != steps or best.get("metric", "all_configs") != METRIC
                   or int(best.get("seeds", 1)) != seeds):
        return (f"kept the campaign's best: it was scored at {best.get('steps', [300])} steps "
                f"({best.get('metric', 'all_configs')}, {best.get('seeds', 1)} seeds), these at {steps} "
                f"({METRIC}, {seeds} seeds); score {state_dir}/best_theta.safetensors in the same run to compare")
    if not math.isfinite(score) or score >= float(best.get("score", math.inf)):
        return f"kept the campaign's best ({best.get('score')}); the best campaign theta here is {score:.4f} ({path})"
    step = at[path]
    state["best"] = {"score": score, "campaign_step": step, "source": os.path.basename(path),
                     "scored_by": "lopt.pretrained.validate", "steps": steps, "metric": METRIC, "seeds": seeds}
    target = os.path.join(state_dir, "best_theta.safetensors")
    if not (os.path.exists(target) and os.path.samefile(path, target)):
        shutil.copyfile(path, target)
    _write_state_file(state_dir, state)
    return f"new campaign best {score:.4f}: {path} (campaign step {step}) -> {state_dir}/best_theta.safetensors"


def campaign_steps(paths: list[str]) -> dict[str, int | None]:
    """Each file's campaign outer step from its header (``None`` where it has none), kept with the
    scores so a file whose name says nothing (``best_theta.safetensors``) is placed on the curve."""
    from lopt import checkpoint

    return {path: checkpoint.read_metadata(path).get("extra", {}).get("campaign_outer_steps") for path in paths}


def _load(path: str, execution: dict[str, Any] | None = None) -> tuple[Any, LearnedOptimizer]:
    """Theta and its learned optimizer (the file's own architecture and config, with ``execution``
    options such as ``state_dtype`` set)."""
    lopt_ = file_optimizer(path)  # a warm-start or a theta file; both record the architecture
    theta, _, _ = load_warm_start(path, lopt_)
    return theta, lopt_.with_execution_options(**(execution or {}))


def _validate_files(paths: list[str], execution: dict[str, Any] | None = None,
                    **options: Any) -> dict[str, dict[str, float]]:
    """:func:`validate_lengths` of theta files, one engine per distinct architecture config."""
    loaded = {path: _load(path, execution) for path in paths}
    groups: dict[str, list[str]] = {}
    for path, (_, lopt_) in loaded.items():
        groups.setdefault(json.dumps([lopt_.name, lopt_.config(), repr(lopt_)], sort_keys=True), []).append(path)
    scores: dict[str, dict[str, float]] = {}
    for index, members in enumerate(groups.values()):  # paired differences within the first file's group only
        lopt_ = loaded[members[0]][1]
        scores.update(validate_lengths({p: loaded[p][0] for p in members}, lopt_=lopt_, paired=index == 0,
                                       **options))
    return {path: scores[path] for path in paths}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("thetas", nargs="+", help="warm-start or theta files (each scored with its own "
                                                  "architecture and config)")
    parser.add_argument("--state", default="campaign")
    parser.add_argument("--families", nargs="*", default=None)
    parser.add_argument("--steps", type=int, nargs="+", default=[300],
                        help="inner steps per validation run; several (e.g. 300 1000) score each theta at every "
                             "length and rank by the mean")
    parser.add_argument("--variants", type=int, default=VALIDATION_VARIANTS)
    parser.add_argument("--seeds", type=int, default=1,
                        help="runs per config, averaged (1: the campaign's fixed key; more cost as many runs)")
    parser.add_argument("--state-dtype", default=None, choices=["float32", "bfloat16"],
                        help="store the optimizer state in this dtype (an execution option; default: the "
                             "architecture's, float32)")
    parser.add_argument("--out", default=None, help="write the scores here as JSON (refuses to overwrite)")
    parser.add_argument("--record-best", default=None, metavar="STATE_DIR",
                        help="copy the best-scoring theta to STATE_DIR/best_theta.safetensors (and record it in "
                             "STATE_DIR/state.json) if it beats the campaign's recorded best")
    args = parser.parse_args(argv)
    if args.out and os.path.exists(args.out):
        parser.error(f"--out {args.out} exists; choose another file (results are never overwritten).")
    if args.out:  # before the long run, not after it: a missing folder must not cost the scores
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    start = time.time()
    if args.record_best and args.state_dtype not in (None, "float32"):
        parser.error("--record-best keeps the campaign's float32 scores comparable; drop --state-dtype.")
    execution = {} if args.state_dtype is None else {"state_dtype": args.state_dtype}
    from lopt.cli.compilation_cache import enable_compilation_cache

    enable_compilation_cache()  # a second validation at the same lengths loads its programs (~10 CPU minutes each)
    scores = _validate_files(args.thetas, execution, state_dir=args.state, families=args.families,
                             steps=args.steps, variants=args.variants, seeds=args.seeds)
    for path, row in scores.items():
        se = row.get(SE_PREFIX + "heldout_normalized_loss")
        delta, delta_se = row.get(PAIRED_PREFIX + "heldout_normalized_loss"), row.get(SE_PREFIX + PAIRED_PREFIX
                                                                                    + "heldout_normalized_loss")
        print(f"{row['heldout_normalized_loss']:.4f}" + (f" ± {se:.4f} (s.e. over {args.seeds} seeds)" if se else "")
              + ("" if delta is None else f" [minus the first theta: {delta:+.4f}"
                 + ("" if delta_se is None else f" ± {delta_se:.4f} paired") + "]")
              + f"  {path}  " +
              " ".join(f"{k[8:]}={v:.3f}" for k, v in row.items() if k.startswith("heldout/")) +
              "".join(f"  [{n} steps: {row[f'steps{n}/heldout_normalized_loss']:.4f}]" for n in args.steps
                      if len(args.steps) > 1))
    if args.record_best:
        print(record_best(scores, args.record_best, steps=args.steps, seeds=args.seeds))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"metric": METRIC, "steps": args.steps[0] if len(args.steps) == 1 else args.steps,
                       "variants": args.variants, "seeds": args.seeds, "families": args.families,
                       "execution": execution,
                       "seconds": time.time() - start, "campaign_steps": campaign_steps(list(scores)),
                       "paired_reference": args.thetas[0],
                       "scores": scores}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

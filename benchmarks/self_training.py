"""Self-training at CPU scale: a learned optimizer as the *outer* optimizer, against Adam.

Metz et al. 2020 (arXiv 2009.11243, last figure) meta-train a fresh learned optimizer with a
learned optimizer as the outer optimizer and report that it beats Adam at outer learning rates
3e-5 and 1e-3. This script runs that comparison on lopt's ``canonical`` config (an MLP on 8x8
Fashion-MNIST, or digits where Fashion-MNIST is not installed; PES over 1,000-step inner
trainings in 50-step unrolls) with a few tasks per outer step, for each fresh learned optimizer
in ``--lopts`` and each outer optimizer:

* ``adam:LR`` for every LR of ``--adam-grid`` (which includes the paper's 3e-5 and 1e-3);
  (c), "Adam at its best learning rate", is the grid point with the lowest final smoothed
  meta-loss (mean over seeds), chosen after the runs;
* ``pretrained``: lopt's shipped learned optimizer (``outer.optimizer=pretrained``), with the
  horizon ``num_steps = --outer-steps`` and no learning rate.

Every run is a plain :class:`lopt.meta.MetaTrainer` run into its own temporary directory; its
``metrics.jsonl`` (meta-loss per outer step, cumulative training seconds) and ``eval.jsonl``
(held-out normalised loss every ``--eval-every`` outer steps) are what is reported. The
meta-loss of one outer step depends on where the PES unrolls are in their inner trainings, so
curves and targets use its running mean over one inner-training episode (horizon / unroll
outer steps). The target meta-loss is ``--target-factor`` times the lowest final smoothed
meta-loss of any outer optimizer (mean over seeds); "steps to target" is the first outer step
whose smoothed meta-loss is at or below it (``null``: never).

``--config mixture`` trains on a small task mixture instead (``self_training_mixture.py``: one
quadratic, the canonical MLP and the 2-D test functions of Wichrowska et al., one bucket each,
every bucket in every outer step) and validates on held-out variants of those structures
(``heldout_normalized_loss``, per family in ``heldout_per_family``).

Usage:
    nice -n 10 python benchmarks/self_training.py                      # learnable_adam, ~10 min CPU
    nice -n 10 python benchmarks/self_training.py --config mixture --adam-grid 3e-5,1e-3,1e-2,3e-2 \
        --result-name self_training_mixture --figure docs/examples/self_training_mixture.png
    nice -n 10 python benchmarks/self_training.py --lopts learnable_adam,nominal --seeds 0
    nice -n 10 python benchmarks/self_training.py --seeds 0 --adam-grid 1e-2,3e-2 \
        --keep-thetas benchmarks/results/self_training_kept_thetas --result-name self_training_kept
Saves ``benchmarks/results/self_training_cpu.json`` and ``docs/examples/self_training.png``
(``--result-name`` and ``--figure`` change both). ``--keep-thetas DIR`` also keeps every run's
final and best theta (``<lopt>_<outer>_seed<seed>[_best].safetensors``, e.g.
``learnable_adam_adam-0.03_seed0.safetensors``; never overwriting a file) for
``benchmarks/self_training_heldout.py --thetas``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import save
from self_training_mixture import DEFAULT_FAMILIES, mixture_overrides
from self_training_thetas import keep_thetas, kept_theta_paths, refuse_existing

import lopt
from lopt.meta.trainer import MetaTrainer

FIGURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "examples", "self_training.png")


def run_one(lopt_name: str, outer: str, seed: int, args: argparse.Namespace) -> dict:
    """One meta-training run; returns its per-step and evaluation curves.

    With ``args.keep_thetas`` (a directory), the run's final and best theta files are kept
    there (:func:`kept_theta_paths`); an existing file there is refused before the run starts.
    """
    keep_dir = getattr(args, "keep_thetas", None)
    targets = kept_theta_paths(keep_dir, lopt_name, outer, seed) if keep_dir else {}
    refuse_existing(list(targets.values()))
    overrides = [f"lopt.name={lopt_name}", f"seed={seed}", f"estimator.num_tasks={args.num_tasks}",
                 f"trainer.outer_steps={args.outer_steps}", f"trainer.eval_every={args.eval_every}",
                 f"trainer.eval_tasks={args.eval_tasks}", f"trainer.eval_steps={args.eval_steps}",
                 f"trainer.checkpoint_every={args.outer_steps}", "trainer.checkpoint_minutes=1000",
                 "final_eval.enabled=false"]
    if outer.startswith("adam:"):
        overrides += ["outer.optimizer=adam", f"outer.learning_rate={outer.split(':', 1)[1]}"]
    else:
        overrides += [f"outer.optimizer={outer}"]
    if args.config == "mixture":
        overrides += mixture_overrides(args.families, heldout_per_bucket=args.heldout_per_bucket)
    cfg = lopt.meta.load_config("canonical", overrides)
    with tempfile.TemporaryDirectory(prefix="self_training_") as out:
        start = time.perf_counter()
        trainer = MetaTrainer(cfg, out, progress=False)
        theta = trainer.run()["theta"]
        wall = time.perf_counter() - start
        rows = lopt.meta.read_metrics(os.path.join(out, "metrics.jsonl"))
        evals = lopt.meta.read_metrics(os.path.join(out, "eval.jsonl"))
        kept = keep_thetas(out, targets, {"lopt": lopt_name, "outer": outer, "seed": seed}) if targets else {}
    meta_loss = np.asarray([r["meta_loss"] for r in rows], dtype=float)
    # a mixture run validates on held-out variants of its structures (heldout_*), canonical on fresh tasks
    score = "heldout_normalized_loss" if cfg.task.mixture else "eval_normalized_loss"
    families = {k.split("/", 1)[1] for row in rows + evals for k in row if "/" in k}
    window = max(1, cfg.truncation.horizon // cfg.estimator.unroll_length)
    small = {k: float(v) for k, v in theta.items() if getattr(v, "size", 0) == 1} if isinstance(theta, dict) else {}
    return {"lopt": lopt_name, "outer": outer, "seed": seed, "wall_seconds": wall, "notes": trainer.notes,
            "final_theta_scalars": small, "kept_thetas": kept,
            "meta_loss": meta_loss.tolist(), "smoothed_meta_loss": smooth(meta_loss, window).tolist(),
            "seconds": [r["seconds"] for r in rows],
            "eval_steps": [e["step"] for e in evals],
            "eval_normalized_loss": [e[score] for e in evals],
            "meta_loss_per_family": {f: [r[f"meta_loss/{f}"] for r in rows] for f in sorted(families)
                                     if f"meta_loss/{f}" in rows[0]},
            "heldout_per_family": {f: [e[f"heldout/{f}"] for e in evals] for f in sorted(families)
                                   if evals and f"heldout/{f}" in evals[0]}}


def smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing running mean (shorter windows at the start); NaNs count as +inf-like failures."""
    x = np.where(np.isfinite(x), x, np.nan)
    out = np.empty_like(x)
    for i in range(len(x)):
        out[i] = np.nanmean(x[max(0, i - window + 1): i + 1])
    return out


def first_at_or_below(curve: list[float], target: float) -> int | None:
    """1-based outer step at which ``curve`` first reaches ``target`` (None: never)."""
    hits = np.nonzero(np.asarray(curve) <= target)[0]
    return int(hits[0]) + 1 if hits.size else None


def summarise(runs: list[dict], lopt_name: str, outers: list[str], target_factor: float) -> dict:
    """Per outer optimizer: final smoothed meta-loss, held-out loss, steps to target (mean over seeds)."""
    mine = [r for r in runs if r["lopt"] == lopt_name]
    final = {o: float(np.mean([r["smoothed_meta_loss"][-1] for r in mine if r["outer"] == o])) for o in outers}
    adam = [o for o in outers if o.startswith("adam:")]
    best_adam = min(adam, key=lambda o: final[o]) if adam else None
    target = target_factor * min(final.values())
    table = {}
    for o in outers:
        rs = [r for r in mine if r["outer"] == o]
        steps = [first_at_or_below(r["smoothed_meta_loss"], target) for r in rs]
        table[o] = {
            "final_smoothed_meta_loss": final[o],
            "final_smoothed_meta_loss_per_seed": [r["smoothed_meta_loss"][-1] for r in rs],
            "final_heldout_normalized_loss": float(np.mean([r["eval_normalized_loss"][-1] for r in rs])),
            "best_heldout_normalized_loss": float(np.mean([min(r["eval_normalized_loss"]) for r in rs])),
            "steps_to_target_per_seed": steps,
            "seconds_per_outer_step": float(np.mean([np.diff(r["seconds"])[-50:].mean() for r in rs])),
            "wall_seconds_incl_setup_and_compile": float(np.mean([r["wall_seconds"] for r in rs])),
        }
    return {"target_meta_loss": target, "best_adam": best_adam, "table": table}


def plot(runs: list[dict], summaries: dict, path: str, reference: str = "adam:0.001", window: int = 20) -> None:
    """Meta-loss vs outer step and vs time, held-out loss, and the meta-loss minus ``reference``'s.

    The last panel is the step-by-step difference to the ``reference`` run of the same seed
    (running mean over ``window`` outer steps; see :func:`paired_gap`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lopts = list(summaries)
    fig, axes = plt.subplots(len(lopts), 4, figsize=(20, 3.8 * len(lopts)), squeeze=False)
    for row, name in enumerate(lopts):
        best = summaries[name]["best_adam"]
        shown = ["adam:3e-05", "adam:0.001", best, "pretrained"]
        shown = list(dict.fromkeys(o for o in shown if o in summaries[name]["table"]))
        references = {r["seed"]: r for r in runs if r["lopt"] == name and r["outer"] == reference}
        for k, outer in enumerate(shown):
            label = {"adam:3e-05": "Adam 3e-5", "adam:0.001": "Adam 1e-3", "pretrained": "pretrained (learned)"}.get(
                outer, outer.replace("adam:", "Adam "))
            if outer == best:
                label += " (best of grid)"
            color = f"C{k}"
            for i, r in enumerate(r for r in runs if r["lopt"] == name and r["outer"] == outer):
                kw = {"color": color, "alpha": 0.9 if i == 0 else 0.5, "label": label if i == 0 else None}
                steps = np.arange(1, len(r["smoothed_meta_loss"]) + 1)
                axes[row, 0].plot(steps, r["smoothed_meta_loss"], **kw)
                axes[row, 1].plot(r["seconds"], r["smoothed_meta_loss"], **kw)
                axes[row, 2].plot(r["eval_steps"], r["eval_normalized_loss"], marker="o", ms=3, **kw)
                if r["seed"] in references:
                    gap = np.asarray(r["meta_loss"], float) - np.asarray(references[r["seed"]]["meta_loss"], float)
                    axes[row, 3].plot(steps, smooth(gap, window), **kw)
        target = summaries[name]["target_meta_loss"]
        for col in (0, 1):
            axes[row, col].axhline(target, color="gray", ls=":", lw=1)
            axes[row, col].set_ylabel("meta-loss (running mean)")
        axes[row, 0].set_xlabel("outer step")
        axes[row, 1].set_xlabel("training seconds (CPU)")
        axes[row, 2].set_xlabel("outer step")
        axes[row, 2].set_ylabel("held-out normalised loss")
        axes[row, 0].set_title(f"fresh {name}: meta-loss vs outer step")
        axes[row, 1].set_title("vs wall time")
        axes[row, 2].set_title("held-out evaluation")
        axes[row, 3].axhline(0.0, color="gray", ls=":", lw=1)
        axes[row, 3].set_xlabel("outer step")
        axes[row, 3].set_ylabel(f"meta-loss minus {reference}'s")
        axes[row, 3].set_title(f"paired with {reference} (same seed, same tasks)")
        axes[row, 0].legend(fontsize=8)
        for ax in axes[row, :3]:
            ax.set_yscale("log")
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pooled_runs(paths: list[str]) -> list[dict]:
    """Every run of the result files ``paths``, in order."""
    runs = []
    for path in paths:
        with open(path) as f:
            runs += json.load(f)["runs"]
    return runs


def paired_gap(run: dict, reference: dict, last: int = 100) -> float:
    """Mean of ``run``'s meta-loss minus ``reference``'s over the last ``last`` outer steps.

    Runs of one seed draw the same tasks and perturbations at every outer step, so the
    difference step by step removes what the task draws add to the meta-loss (in a mixture run
    the level of the meta-loss jumps with every re-draw of the pools); negative: ``run`` lower.

    Example:
        >>> paired_gap({"meta_loss": [5.0, 1.0, 2.0]}, {"meta_loss": [0.0, 2.0, 2.5]}, last=2)
        -0.75
    """
    a, b = np.asarray(run["meta_loss"][-last:], float), np.asarray(reference["meta_loss"][-last:], float)
    return float(np.nanmean(a - b))


def pretrained_wins(runs: list[dict], outer: str) -> dict:
    """On how many seeds run by both, the pretrained outer optimizer ends lower than ``outer``.

    Compares final smoothed meta-loss and final held-out loss seed by seed (one learned
    optimizer's runs).

    Example:
        >>> run = lambda o, s, m, h: {"outer": o, "seed": s, "smoothed_meta_loss": [m], "eval_normalized_loss": [h]}
        >>> pretrained_wins([run("pretrained", 0, 0.1, 0.2), run("adam:0.001", 0, 0.3, 0.1),
        ...                  run("pretrained", 1, 0.5, 0.2), run("adam:0.001", 1, 0.4, 0.3)], "adam:0.001")
        {'seeds': 2, 'meta_loss': 1, 'heldout': 1}
    """
    by_seed = {o: {r["seed"]: r for r in runs if r["outer"] == o} for o in ("pretrained", outer)}
    seeds = sorted(set(by_seed["pretrained"]) & set(by_seed[outer]))
    def lower(key: str) -> int:
        return sum(by_seed["pretrained"][s][key][-1] < by_seed[outer][s][key][-1] for s in seeds)
    return {"seeds": len(seeds), "meta_loss": lower("smoothed_meta_loss"), "heldout": lower("eval_normalized_loss")}


def combine(paths: list[str], reference: str = "adam:0.001") -> dict:
    """Pools the runs of several result files (e.g. different seeds) into one table per outer optimizer.

    "steps to reference" is the first outer step at which a run's smoothed meta-loss reaches the
    mean final smoothed meta-loss of ``reference`` over all its pooled runs.
    """
    runs = pooled_runs(paths)
    table = {}
    for name in dict.fromkeys(r["lopt"] for r in runs):
        mine = [r for r in runs if r["lopt"] == name]
        target = float(np.mean([r["smoothed_meta_loss"][-1] for r in mine if r["outer"] == reference]))
        rows = {}
        for outer in dict.fromkeys(r["outer"] for r in mine):
            rs = sorted((r for r in mine if r["outer"] == outer), key=lambda r: r["seed"])
            final = np.asarray([r["smoothed_meta_loss"][-1] for r in rs])
            heldout = np.asarray([r["eval_normalized_loss"][-1] for r in rs])
            rows[outer] = {"seeds": [r["seed"] for r in rs], "final_meta_loss_mean": float(final.mean()),
                           "final_meta_loss_std": float(final.std(ddof=1)) if len(rs) > 1 else 0.0,
                           "final_heldout_mean": float(heldout.mean()),
                           "final_heldout_std": float(heldout.std(ddof=1)) if len(rs) > 1 else 0.0,
                           "steps_to_reference_per_seed": [first_at_or_below(r["smoothed_meta_loss"], target)
                                                           for r in rs]}
            reference_runs = {r["seed"]: r for r in mine if r["outer"] == reference}
            rows[outer]["paired_meta_loss_gap_per_seed"] = [
                paired_gap(r, reference_runs[r["seed"]]) if r["seed"] in reference_runs else None for r in rs]
            rows[outer]["heldout_last4_per_seed"] = [float(np.mean(r["eval_normalized_loss"][-4:])) for r in rs]
            families = sorted({f for r in rs for f in r.get("heldout_per_family", {})})
            if families:  # mixture runs: the held-out score of every family's variants
                rows[outer]["final_heldout_per_family_mean"] = {
                    f: float(np.mean([r["heldout_per_family"][f][-1] for r in rs])) for f in families}
        if "pretrained" in rows:
            for outer, row in rows.items():
                row["pretrained_wins"] = pretrained_wins(mine, outer)
        table[name] = {"reference": reference, "reference_final_meta_loss": target, "rows": rows}
        print(f"\nfresh {name}: pooled over {sorted({r['seed'] for r in mine})}; reference {reference} "
              f"final meta-loss {target:.4f}")
        for outer, row in rows.items():
            wins = row.get("pretrained_wins", {})
            print(f"{outer:12s} seeds {row['seeds']!s:16s} meta-loss {row['final_meta_loss_mean']:.4f} "
                  f"+- {row['final_meta_loss_std']:.4f}  held-out {row['final_heldout_mean']:.4f} "
                  f"+- {row['final_heldout_std']:.4f}  steps to reference {row['steps_to_reference_per_seed']}"
                  + (f"  pretrained lower on {wins['meta_loss']}/{wins['seeds']} (meta-loss), "
                     f"{wins['heldout']}/{wins['seeds']} (held-out)" if wins and outer != "pretrained" else ""))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="canonical", choices=("canonical", "mixture"),
                        help="canonical: one task; mixture: one small structure per --families family "
                             "(self_training_mixture.py), validated on held-out variants")
    parser.add_argument("--families", default=DEFAULT_FAMILIES, help="--config mixture: the mixture's families")
    parser.add_argument("--heldout-per-bucket", type=int, default=2,
                        help="--config mixture: held-out variants per structure")
    parser.add_argument("--lopts", default="learnable_adam", help="fresh learned optimizers to meta-train")
    parser.add_argument("--adam-grid", default="3e-5,1e-4,3e-4,1e-3,3e-3,1e-2")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--outer-steps", type=int, default=400)
    parser.add_argument("--num-tasks", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-tasks", type=int, default=4)
    parser.add_argument("--eval-steps", type=int, default=1000)
    parser.add_argument("--target-factor", type=float, default=1.1)
    parser.add_argument("--figure", default=FIGURE)
    parser.add_argument("--skip-pretrained", action="store_true", help="Adam grid only (e.g. to extend a grid)")
    parser.add_argument("--result-name", default="self_training", help="results/<name>_<device>.json")
    parser.add_argument("--keep-thetas", metavar="DIR",
                        help="keep every run's theta.safetensors and theta_best.safetensors in DIR, as "
                             "<lopt>_<outer>_seed<seed>[_best].safetensors (existing files are refused)")
    parser.add_argument("--combine", nargs="+", metavar="JSON",
                        help="only pool the runs of these result files (e.g. several seeds) into one table, "
                             "saved as results/<--result-name>_<device>.json")
    args = parser.parse_args()
    if args.combine:
        path = save(args.result_name, {"combined": args.combine, "summaries": combine(args.combine)})
        if args.figure != FIGURE:  # a figure of the pooled runs, only when asked for
            runs = pooled_runs(args.combine)
            outers = {name: list(dict.fromkeys(r["outer"] for r in runs if r["lopt"] == name))
                      for name in dict.fromkeys(r["lopt"] for r in runs)}
            plot(runs, {name: summarise(runs, name, o, args.target_factor) for name, o in outers.items()}, args.figure)
            print(f"saved {os.path.normpath(args.figure)}")
        print(f"saved {path}")
        return
    if args.config == "mixture":  # bad --families or --heldout-per-bucket fail here, before any run
        mixture_overrides(args.families, heldout_per_bucket=args.heldout_per_bucket)
    seeds = [int(s) for s in args.seeds.split(",")]
    outers = [f"adam:{float(lr):g}" for lr in args.adam_grid.split(",")] + ([] if args.skip_pretrained else ["pretrained"])
    if args.keep_thetas:  # refuse before the first run, not after an hour of them
        refuse_existing([p for name in args.lopts.split(",") for seed in seeds for outer in outers
                         for p in kept_theta_paths(args.keep_thetas, name, outer, seed).values()])
    runs = []
    for name in args.lopts.split(","):
        for seed in seeds:
            for outer in outers:
                runs.append(run_one(name, outer, seed, args))
                r = runs[-1]
                print(f"{name:15s} seed {seed} {outer:12s} final smoothed meta-loss {r['smoothed_meta_loss'][-1]:.4f} "
                      f"held-out {r['eval_normalized_loss'][-1]:.4f}  {r['wall_seconds']:.0f} s", flush=True)
    summaries = {name: summarise(runs, name, outers, args.target_factor) for name in args.lopts.split(",")}
    for name, s in summaries.items():
        print(f"\nfresh {name}: target meta-loss {s['target_meta_loss']:.4f}; best Adam: {s['best_adam']}")
        print(f"{'outer optimizer':14s} {'final meta-loss':>16s} {'held-out (final)':>17s} {'steps to target':>20s} "
              f"{'s/outer step':>12s}")
        for outer, t in s["table"].items():
            print(f"{outer:14s} {t['final_smoothed_meta_loss']:16.4f} {t['final_heldout_normalized_loss']:17.4f} "
                  f"{t['steps_to_target_per_seed']!s:>20s} {t['seconds_per_outer_step']:12.3f}")
    plot(runs, summaries, args.figure)
    path = save(args.result_name, {"config": args.config, "args": vars(args), "summaries": summaries, "runs": runs})
    print(f"\nsaved {path} and {os.path.normpath(args.figure)}")


if __name__ == "__main__":
    main()

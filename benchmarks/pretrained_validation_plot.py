"""The campaign's validation curve: every scored theta's held-out score against its campaign step.

Reads the JSON files written by ``python -m lopt.pretrained.validate ... --out FILE`` (one per
batch of scored snapshots), places each theta at its campaign outer step (the step validate read
from the file's header, kept under ``campaign_steps``; for older files, from ``theta-NNNNNN``,
``campaign step N`` or a ``shipped``/``warm``/``campaign_`` prefix before the step in its name),
takes the initial theta (= Adam 1e-3) as the reference line, marks the rewinds recorded in
``campaign/state.json`` and draws the mean over the 9 structures and each structure's score
(0 = the best Adam grid run of that validation config, 1 = its initial loss), one colour per
validation length (``--lengths``, default 300 and 1,000 inner steps).

Usage:
    python benchmarks/pretrained_validation_plot.py            # the committed validation files
Saves ``benchmarks/results/pretrained_validation_curve.json`` and
``docs/examples/pretrained/validation.png``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
FIGURE = os.path.join(ROOT, "docs", "examples", "pretrained", "validation.png")
_STEP_PATTERNS = (r"theta-(\d+)", r"campaign step (\d+)", r"(?:shipped|warm|campaign_)(\d+)")


def campaign_step(name: str) -> int | None:
    """The campaign outer step a scored theta's name gives, ``-1`` for the initial theta, else ``None``.

    Another line's untrained start (``initial_distance...``) is neither: ``None``.

    >>> campaign_step("campaign/thetas/theta-001806.safetensors"), campaign_step("/tmp/initial_adam1e-3.safetensors")
    (1806, -1)
    >>> campaign_step("/tmp/initial_distance.safetensors") is None
    True
    """
    base = os.path.basename(name)
    if base.startswith("initial"):
        return -1 if base.startswith("initial_adam") else None
    for pattern in _STEP_PATTERNS:
        found = re.search(pattern, base)
        if found:
            return int(found.group(1))
    return None


def collect(paths: list[str], length: int, metric: str = "all_configs", variants: int = 2
            ) -> tuple[dict[str, float] | None, dict[int, dict[str, float]]]:
    """The initial theta's scores and, per campaign step, the last scores found for it, at ``length``
    steps, from files scored with ``metric`` (files without a ``metric`` field averaged every config)
    on ``variants`` held-out variants of every structure (files restricted to some families, such
    as the 32-variant losg scores, are left out: their mean is not the nine-structure mean)."""
    reference, by_step = None, {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("metric", "all_configs") != metric:
            continue  # scores that average other configs are not comparable
        if data.get("families") or data.get("variants", 2) != variants:
            continue  # other configs (a family subset, more variants) are not comparable
        lengths = data.get("steps")
        if lengths != length and not (isinstance(lengths, list) and length in lengths):
            continue  # other validation lengths are not comparable
        prefix = f"steps{length}/" if isinstance(lengths, list) else ""  # runs at several lengths keep each one's scores
        recorded = data.get("campaign_steps", {})  # from the files' headers (validate writes them)
        for name, row in data["scores"].items():
            scores = {k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix)} if prefix else row
            step = recorded.get(name) if recorded.get(name) is not None else campaign_step(name)
            if step == -1:
                reference = scores
            elif step is not None:
                by_step[step] = scores
    return reference, dict(sorted(by_step.items()))


def _lineages(by_step: dict[int, dict[str, float]], reference: dict[str, float] | None,
              rewinds: list[tuple[int, int | None]]) -> list[list[tuple[int, dict[str, float]]]]:
    """The scored thetas split at every rewind; a line after a rewind starts at the theta it went back to."""
    bounds = [at for at, _ in rewinds]
    lines: list[list[tuple[int, dict[str, float]]]] = [[] for _ in range(len(bounds) + 1)]
    for step, row in by_step.items():
        lines[sum(step > b for b in bounds)].append((step, row))
    for line, (at, to) in zip(lines[1:], rewinds):
        start = reference if to == 0 else by_step.get(to) if to is not None else None
        if start is not None:
            line.insert(0, (at, start))
    return [line for line in lines if line]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", help="validation JSON files (default: results/pretrained_validation*)")
    parser.add_argument("--state", default=os.path.join(ROOT, "campaign", "state.json"))
    parser.add_argument("--figure", default=FIGURE)
    parser.add_argument("--lengths", type=int, nargs="+", default=[300, 1000],
                        help="validation lengths (inner steps) to draw, one colour each")
    parser.add_argument("--variants", type=int, default=2,
                        help="draw files scored on this many held-out variants per structure (validate --variants)")
    parser.add_argument("--metric", default="all_configs", choices=["all_configs", "informative_configs"],
                        help="which validation metric's files to draw (lopt.pretrained.validate.METRIC; "
                             "the campaign's history until session 19 is all_configs)")
    args = parser.parse_args(argv)
    files = args.files or sorted(glob.glob(os.path.join(RESULTS, "pretrained_validation*_cpu.json")))
    with open(args.state, encoding="utf-8") as f:
        rewinds = [(r["at_outer_step"], r["to_campaign_step"]) for r in json.load(f).get("rewinds", [])]
    curves = {n: collect(files, n, args.metric, args.variants) for n in args.lengths}
    curves = {n: curve for n, curve in curves.items() if curve[1]}
    if not curves:
        raise SystemExit(f"no campaign theta with a step in {files}; pass validate --out files")
    out = {"files": [os.path.relpath(p, ROOT) for p in files],
           "rewinds": [{"at_outer_step": a, "to_campaign_step": b} for a, b in rewinds],
           "lengths": {str(n): {"reference": ref, "steps": list(by_step), "scores": list(by_step.values())}
                       for n, (ref, by_step) in curves.items()}}
    with open(os.path.join(RESULTS, "pretrained_validation_curve.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    for n, (reference, by_step) in curves.items():
        best = min(by_step, key=lambda s: by_step[s]["heldout_normalized_loss"])
        print(f"{n} steps: {len(by_step)} thetas; best campaign step {best}: "
              f"{by_step[best]['heldout_normalized_loss']:.4f}; initial theta (= Adam 1e-3): "
              f"{reference['heldout_normalized_loss'] if reference else float('nan'):.4f}")
    any_row = next(iter(next(iter(curves.values()))[1].values()))
    families = sorted(k.split("/", 1)[1] for k in any_row if k.startswith("heldout/"))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 5, figsize=(17, 6.5), sharex=True)
    panels = [("heldout_normalized_loss", "mean of 9 structures")] + [(f"heldout/{f}", f) for f in families]
    for ax, (key, title) in zip(axes.flat, panels):
        for color, (n, (reference, by_step)) in zip(("C0", "C2", "C4"), curves.items()):
            for i, lineage in enumerate(_lineages(by_step, reference, rewinds)):
                ax.plot([x for x, _ in lineage], [row[key] for _, row in lineage], "o-", ms=3, color=color,
                        label=f"campaign theta, {n} steps" if i == 0 else None)
            if reference:
                ax.axhline(reference[key], color=color, ls="--", lw=1, label=f"initial theta = Adam 1e-3, {n} steps")
        ax.axhline(0.0, color="0.6", lw=0.8)
        for i, (step, _) in enumerate(rewinds):
            ax.axvline(step, color="C3", ls=":", label="rewind" if i == 0 else None)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("campaign outer step")
    axes[0, 0].set_ylabel("validation (0 = tuned Adam, 1 = initial loss)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Pretrained optimizer campaign: validation on held-out variants of the 9 training structures "
                 f"(trained {' and '.join(map(str, curves))} steps; lower is better)", fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.figure), exist_ok=True)
    fig.savefig(args.figure, dpi=110)
    print(f"saved {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The campaign's validation curve: every scored theta's held-out score against its campaign step.

Reads the JSON files written by ``python -m lopt.pretrained.validate ... --out FILE`` (one per
batch of scored snapshots), places each theta at its campaign outer step (from ``theta-NNNNNN``,
``campaign step N`` or a ``shipped``/``warm``/``campaign_`` prefix before the step in its name),
takes the initial theta (= Adam 1e-3) as the reference line, marks the rewinds recorded in
``campaign/state.json`` and draws the mean over the 9 structures and each structure's score
(0 = the best Adam grid run of that validation config, 1 = its initial loss).

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

    >>> campaign_step("campaign/thetas/theta-001806.safetensors"), campaign_step("/tmp/initial_adam1e-3.safetensors")
    (1806, -1)
    """
    base = os.path.basename(name)
    if base.startswith("initial"):
        return -1
    for pattern in _STEP_PATTERNS:
        found = re.search(pattern, base)
        if found:
            return int(found.group(1))
    return None


def collect(paths: list[str]) -> tuple[dict[str, float] | None, dict[int, dict[str, float]]]:
    """The initial theta's scores and, per campaign step, the last scores found for it."""
    reference, by_step = None, {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("steps") != 300:
            continue  # other validation lengths are not comparable
        for name, scores in data["scores"].items():
            step = campaign_step(name)
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
    args = parser.parse_args(argv)
    files = args.files or sorted(glob.glob(os.path.join(RESULTS, "pretrained_validation*_cpu.json")))
    reference, by_step = collect(files)
    if not by_step:
        raise SystemExit(f"no campaign theta with a step in {files}; pass validate --out files")
    with open(args.state, encoding="utf-8") as f:
        rewinds = [(r["at_outer_step"], r["to_campaign_step"]) for r in json.load(f).get("rewinds", [])]
    families = sorted(k.split("/", 1)[1] for k in next(iter(by_step.values())) if k.startswith("heldout/"))
    out = {"files": [os.path.relpath(p, ROOT) for p in files],
           "rewinds": [{"at_outer_step": a, "to_campaign_step": b} for a, b in rewinds], "reference": reference,
           "steps": list(by_step), "scores": [by_step[s] for s in by_step]}
    with open(os.path.join(RESULTS, "pretrained_validation_curve.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    best = min(by_step, key=lambda s: by_step[s]["heldout_normalized_loss"])
    print(f"{len(by_step)} thetas; best campaign step {best}: {by_step[best]['heldout_normalized_loss']:.4f}; "
          f"initial theta (= Adam 1e-3): {reference['heldout_normalized_loss'] if reference else float('nan'):.4f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lineages = _lineages(by_step, reference, rewinds)
    fig, axes = plt.subplots(2, 5, figsize=(17, 6.5), sharex=True)
    panels = [("heldout_normalized_loss", "mean of 9 structures")] + [(f"heldout/{f}", f) for f in families]
    for ax, (key, title) in zip(axes.flat, panels):
        for i, lineage in enumerate(lineages):
            ax.plot([x for x, _ in lineage], [row[key] for _, row in lineage], "o-", ms=3, color="C0",
                    label="campaign theta" if i == 0 else None)
        if reference:
            ax.axhline(reference[key], color="C1", ls="--", label="initial theta = Adam 1e-3")
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
                 "(300 steps, lower is better)", fontsize=11)
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.figure), exist_ok=True)
    fig.savefig(args.figure, dpi=110)
    print(f"saved {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The self-training benchmark's ``--keep-thetas DIR`` option: keep each run's theta files.

``benchmarks/self_training.py`` runs every :class:`lopt.meta.MetaTrainer` run in a temporary
directory; with ``--keep-thetas DIR`` the run's final ``theta.safetensors`` and its best-evaluated
``theta_best.safetensors`` are copied to ``DIR`` under names that say which run they come from,
for ``benchmarks/self_training_heldout.py --thetas``. Files are read with
:func:`lopt.learned.load_theta` (digest verified) and written with :func:`lopt.learned.save_theta`;
an existing file is never overwritten.
"""

from __future__ import annotations

import os

import lopt
from lopt import checkpoint

#: The theta files a MetaTrainer run writes, and the suffix of their kept copies.
KEPT_FILES = {"theta.safetensors": "", "theta_best.safetensors": "_best"}


def kept_theta_paths(directory: str, lopt_name: str, outer: str, seed: int) -> dict[str, str]:
    """Where ``--keep-thetas DIRECTORY`` copies a run's theta files, keyed by the run's file name.

    Example:
        >>> kept_theta_paths("kept", "learnable_adam", "adam:0.03", 0)["theta.safetensors"]
        'kept/learnable_adam_adam-0.03_seed0.safetensors'
        >>> kept_theta_paths("kept", "nominal", "pretrained", 2)["theta_best.safetensors"]
        'kept/nominal_pretrained_seed2_best.safetensors'
    """
    stem = f"{lopt_name}_{outer.replace(':', '-')}_seed{seed}"
    return {name: os.path.join(directory, f"{stem}{suffix}.safetensors") for name, suffix in KEPT_FILES.items()}


def refuse_existing(paths: list[str]) -> None:
    """Raises ``ValueError`` naming every path of ``paths`` that exists (kept thetas are never overwritten)."""
    taken = [p for p in paths if os.path.exists(p)]
    if taken:
        raise ValueError(f"--keep-thetas would overwrite {taken}; move or delete them first, or pass another "
                         "--keep-thetas directory.")


def keep_thetas(run_dir: str, targets: dict[str, str], extra: dict) -> dict[str, str]:
    """Copies the theta files of the run in ``run_dir`` to ``targets`` (from :func:`kept_theta_paths`).

    Each file is read with :func:`lopt.learned.load_theta` (which verifies its digest) and
    written with :func:`lopt.learned.save_theta` (a fresh digest), keeping the trainer's
    metadata and adding ``extra``. A target that exists is refused before anything is written;
    ``theta_best.safetensors`` is skipped when the run wrote none (no finite evaluation).
    Returns the paths written, keyed by the run's file name.
    """
    refuse_existing(list(targets.values()))
    os.makedirs(os.path.dirname(os.path.abspath(next(iter(targets.values())))), exist_ok=True)
    kept = {}
    for name, target in targets.items():
        source = os.path.join(run_dir, name)
        if not os.path.exists(source):
            continue
        theta, lopt_ = lopt.learned.load_theta(source)
        trainer_extra = checkpoint.read_metadata(source).get("extra", {})
        kept[name] = str(lopt.learned.save_theta(target, lopt_, theta, extra={**trainer_extra, **extra}))
    return kept

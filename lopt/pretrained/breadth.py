"""Widening the campaign: more training structures per family, the validation set kept as it was.

Metz et al. found that the number and diversity of meta-training tasks decides how well a learned
optimizer generalises. The campaign began with one structure per training family (nine, drawn
once from the ``taskset`` catalogue); :func:`widen` adds more structures of the same families,
drawn from the same catalogue, so later sessions train on all of them (one bucket program each).

Validation must stay comparable across the campaign, so the first widening pins the structures
validated so far in ``state.json``'s ``validation_structures``; :mod:`lopt.pretrained.validate`
scores thetas on those, whatever the training set has become. Each widening is logged in
``widenings`` (date, outer step, structures added, seed, note).

Usage::

    python -m lopt.pretrained.campaign --state campaign --widen 1 --note "why"
"""

from __future__ import annotations

import datetime
import os
import zlib
from typing import Any

import numpy as np

__all__ = ["training_families", "validation_structures", "widen"]


def training_families(structures: list[dict[str, Any]]) -> list[str]:
    """The task families of ``structures`` (inside the ``augmented`` wrapper), in first-seen order."""
    from lopt.tasks.mixture import base_family

    return list(dict.fromkeys(base_family(s) for s in structures))


def validation_structures(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The structures a campaign validates on: pinned at its first widening, else its training set."""
    return list(state.get("validation_structures") or state["structures"])


def widen(state_dir: str, *, per_family: int = 1, seed: int = 1, note: str = "") -> dict[str, Any]:
    """Adds ``per_family`` new structures of every training family to the campaign's training set.

    The new structures come from the ``taskset`` catalogue of the campaign's training families
    (seeded by ``seed``, under the preset's budget), never one already in the training set; each is
    added as one variant config, as the campaign's first structures were. The structures validated
    so far are pinned first (``validation_structures``), so validation scores stay comparable.

    Args:
        state_dir: the campaign folder (its ``state.json`` is rewritten atomically).
        per_family: new structures per family (a positive integer).
        seed: the catalogue's seed and the choice among its unused structures.
        note: why, kept in the record.

    Returns:
        The record appended to ``state.json``'s ``widenings``.

    Raises:
        ValueError: ``state_dir`` has no campaign with structures, ``per_family`` is not a positive
            integer, or a family's catalogue has fewer unused structures than asked (nothing is written).

    Example:
        >>> import json, pathlib, tempfile
        >>> from lopt.pretrained.breadth import widen
        >>> d = tempfile.mkdtemp()
        >>> start = [{"family": "augmented", "task": {"family": "quadratic", "dim": 4}}]
        >>> _ = (pathlib.Path(d) / "state.json").write_text(json.dumps({"sessions": [], "structures": start}))
        >>> widen(d, per_family=2)["added"]  # doctest: +SKIP
        2
    """
    from lopt.pretrained.campaign import _read_state, _write_state_file
    from lopt.tasks import TaskConfig, taskset
    from lopt.tasks.mixture import structure_key

    if isinstance(per_family, bool) or not isinstance(per_family, int) or per_family < 1:
        raise ValueError(f"widen: per_family={per_family!r} must be a positive integer (new structures per family).")
    if not os.path.exists(os.path.join(state_dir, "state.json")):
        raise ValueError(f"{state_dir!r} has no state.json; pass the campaign folder (e.g. --state campaign).")
    state = _read_state(state_dir)
    structures = list(state.get("structures") or [])
    if not structures:
        raise ValueError(f"{state_dir}/state.json holds no structures yet; run a first session before widening.")
    families = training_families(structures)
    dist = taskset(families, seed=seed)
    used = {structure_key(TaskConfig(s)) for s in structures}
    added: list[dict[str, Any]] = []
    for family in families:
        fresh = [s for s in dist.structures(family) if structure_key(s) not in used]
        if len(fresh) < per_family:
            raise ValueError(f"widen: the {family!r} catalogue (seed {seed}) has {len(fresh)} structure(s) the "
                             f"campaign does not train on, fewer than per_family={per_family}; ask for fewer or "
                             "pass another seed. Nothing was changed.")
        rng = np.random.default_rng([seed, zlib.crc32(family.encode())])
        for index in rng.choice(len(fresh), size=per_family, replace=False):
            config = dist.variants(fresh[int(index)], int(rng.integers(2**31)), 1)[0]
            used.add(structure_key(config))
            added.append(config.to_dict())
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "at_outer_step": int(state.get("outer_steps", 0)), "added": len(added), "seed": seed,
              "families": families, "structures_before": len(structures)}
    if note:
        record["note"] = note
    state["validation_structures"] = validation_structures(state)
    state["structures"] = structures + added
    state["widenings"] = state.get("widenings", []) + [record]
    _write_state_file(state_dir, state)
    return record

"""Shipping a campaign theta as lopt's pretrained weights, with what it cost in its header.

``python -m lopt.pretrained.campaign --state campaign --ship [THETA]`` calls :func:`ship`; the
header of ``lopt/pretrained/weights/<name>.safetensors`` records the theta's campaign step and
the GPU and CPU minutes of the sessions that led to it (:func:`lineage_sessions`, which follows
the campaign's rewinds), next to the campaign's total.
"""

from __future__ import annotations

import os
from typing import Any

from lopt import checkpoint
from lopt.pretrained.campaign import _read_state

__all__ = ["lineage_sessions", "ship"]


def lineage_sessions(state: dict[str, Any], step: int) -> list[dict[str, Any]]:
    """The sessions whose training led to the theta at campaign outer step ``step``.

    Without rewinds these are the sessions that started before ``step``. A rewind (recorded in
    ``state["rewinds"]``) at outer step ``a`` back to the theta of step ``b`` cuts the line: a
    theta after ``a`` descends from the sessions run since ``a`` and from those that led to ``b``
    (none for the initial theta, ``b = 0``).

    Example:
        >>> state = {"sessions": [{"start_outer_step": 0}, {"start_outer_step": 100}, {"start_outer_step": 250}],
        ...          "rewinds": [{"at_outer_step": 250, "to_campaign_step": 0}]}
        >>> [s["start_outer_step"] for s in lineage_sessions(state, 200)], lineage_sessions(state, 300)
        ([0, 100], [{'start_outer_step': 250}])
    """
    earlier = [r for r in state.get("rewinds", []) if r["at_outer_step"] < step]
    if not earlier:
        return [s for s in state["sessions"] if s["start_outer_step"] < step]
    last = max(earlier, key=lambda r: r["at_outer_step"])
    since = [s for s in state["sessions"] if last["at_outer_step"] <= s["start_outer_step"] < step]
    back = last.get("to_campaign_step") or 0
    before = lineage_sessions({**state, "rewinds": [r for r in state["rewinds"] if r["at_outer_step"] < back]},
                              back) if back else []
    return before + since


def ship(state_dir: str, *, theta_path: str | None = None, name: str = "default", directory: str | None = None) -> str:
    """Writes the campaign's theta (or ``theta_path``'s) as the package's pretrained weights ``name``.

    The header records what led to this theta (its outer step, when ``theta_path``'s header
    holds ``campaign_outer_steps``, and the GPU and CPU minutes of the sessions up to it) so the
    shipped file says what it is; a ``note`` in ``theta_path``'s header (e.g. a change made by
    hand after meta-training) is kept, and so is ``reconfigured_from`` (the source digest and the
    config changes of :mod:`lopt.learned.reconfigure`). ``directory``: where to write (default: the package's
    ``lopt/pretrained/weights``).
    """
    from lopt.learned.serialization import load_theta, save_theta
    from lopt.meta.warm_start import file_optimizer, load_warm_start

    state = _read_state(state_dir)
    steps, source_extra = state["outer_steps"], {}
    if theta_path:
        theta, lopt_ = load_theta(theta_path)
        best = os.path.join(state_dir, "best_theta.safetensors")
        if state.get("best") and os.path.exists(best) and os.path.samefile(theta_path, best):
            steps = int(state["best"]["campaign_step"])  # the campaign's best-validated theta
        source_extra = checkpoint.read_metadata(theta_path).get("extra", {})
        steps = int(source_extra.get("campaign_outer_steps", steps))
    else:
        warm = os.path.join(state_dir, "warm_start.safetensors")
        lopt_ = file_optimizer(warm)
        theta, _, _ = load_warm_start(warm, lopt_)
    used = lineage_sessions(state, steps)  # the sessions (and their minutes) that led to this theta
    minutes = {kind: round(sum(s["seconds"] for s in used if bool(s.get("on_gpu", "cpu" not in s["device"]))
                               == (kind == "gpu")) / 60.0, 2) for kind in ("gpu", "cpu")}
    folder = directory or os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
    target = os.path.join(folder, f"{name}.safetensors")
    extra = {"campaign_outer_steps": steps, "gpu_minutes": minutes["gpu"], "cpu_minutes": minutes["cpu"],
             "sessions": len(used), "campaign_gpu_minutes": state.get("gpu_minutes", 0.0),
             "source": os.path.basename(theta_path) if theta_path else "campaign/warm_start.safetensors"}
    extra.update({k: source_extra[k] for k in ("note", "reconfigured_from") if source_extra.get(k)})
    save_theta(target, lopt_, theta, extra=extra)
    return target

"""Rewinding the campaign: the next session starts from an earlier theta, and the state says so.

Validation can show that a campaign has drifted: later thetas score worse than an earlier one
(or than the initial theta) on the held-out variants. A rewind makes an earlier theta the warm
start of the next session, with a fresh outer-optimizer state, and keeps everything else: the
warm start it replaces is kept under ``rewound/``, the sessions and their minutes stay in the
log (the campaign's outer-step count is the compute spent and keeps growing), and
``state.json``'s ``rewinds`` list records when, from which step and to which theta.

Usage::

    python -m lopt.pretrained.campaign --state campaign --rewind campaign/best_theta.safetensors
    python -m lopt.pretrained.campaign --state campaign --rewind initial   # nominal's initial theta (= Adam 1e-3)
"""

from __future__ import annotations

import datetime
import os
import shutil
from typing import Any

import jax

from lopt import checkpoint

__all__ = ["INITIAL", "rewind"]

#: ``--rewind`` value for the architecture's initial theta (``nominal`` behaves as Adam 1e-3 there).
INITIAL = "initial"


def rewind(state_dir: str, theta_path: str, *, note: str = "") -> dict[str, Any]:
    """Makes ``theta_path`` (or the initial theta) the warm start of the campaign's next session.

    Args:
        state_dir: the campaign folder (``state.json``, ``warm_start.safetensors``).
        theta_path: a ``nominal`` theta or warm-start file (its digest is verified), or
            :data:`INITIAL` for ``nominal``'s initial theta (key 0).
        note: why, kept in the record.

    Returns:
        The record appended to ``state.json``'s ``rewinds``.

    Raises:
        ValueError: ``state_dir`` has no campaign, or a warm start trained since the last rewind
            cannot be kept because ``rewound/`` already holds one for this outer step (nothing is
            changed). A second rewind with no session in between replaces the warm start without
            keeping it: it is the last rewind's theta, whose source that record names.
        FileNotFoundError: ``theta_path`` does not exist.

    Example:
        >>> import json, pathlib, tempfile
        >>> from lopt.pretrained.rewind import rewind
        >>> d = tempfile.mkdtemp()
        >>> _ = (pathlib.Path(d) / "state.json").write_text(json.dumps({"sessions": [], "outer_steps": 0}))
        >>> rewind(d, "initial")["to_campaign_step"]
        0
    """
    from lopt.learned import get as get_lopt
    from lopt.learned.serialization import save_theta
    from lopt.meta.warm_start import file_optimizer, load_warm_start
    from lopt.pretrained.campaign import _read_state, _write_state_file

    if not os.path.exists(os.path.join(state_dir, "state.json")):
        raise ValueError(f"{state_dir!r} has no state.json; pass the campaign folder (e.g. --state campaign).")
    state = _read_state(state_dir)
    lopt_ = get_lopt("nominal")
    if theta_path == INITIAL:
        theta, source, to_step = lopt_.init(jax.random.key(0)), "initial theta (nominal, key 0; = Adam 1e-3)", 0
    else:
        lopt_ = file_optimizer(theta_path)  # the file's architecture: a rewind may start a line of another config
        theta, _, meta = load_warm_start(theta_path, lopt_)  # digest-checked; a theta or a warm-start file
        to_step = meta.get("extra", {}).get("campaign_outer_steps")
        source = os.path.basename(theta_path)
    at_step = int(state.get("outer_steps", 0))
    warm = os.path.join(state_dir, "warm_start.safetensors")
    kept = None
    if os.path.exists(warm):
        kept = os.path.join(state_dir, "rewound", f"warm_start-{at_step:06d}.safetensors")
        last = (state.get("rewinds") or [{}])[-1]
        if (os.path.exists(kept) and last.get("at_outer_step") == at_step
                and last.get("theta_digest") == checkpoint.stored_digest(warm)):
            kept = None  # untouched since the last rewind: that rewind's source holds this theta; nothing to keep
        elif os.path.exists(kept):
            raise ValueError(f"{kept} exists: the campaign was already rewound at outer step {at_step}. Nothing was "
                             "changed; run a session before rewinding again.")
        if kept:
            os.makedirs(os.path.dirname(kept), exist_ok=True)
            shutil.copyfile(warm, kept)
    extra = {"rewound_at": at_step} | ({"campaign_outer_steps": int(to_step)} if to_step is not None else {})
    save_theta(warm, lopt_, theta, extra=extra)
    entry = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "at_outer_step": at_step, "to_campaign_step": to_step, "source": source,
             "theta_digest": checkpoint.stored_digest(warm),
             "kept_warm_start": os.path.relpath(kept, state_dir) if kept else None}
    if note:
        entry["note"] = note
    state["rewinds"] = state.get("rewinds", []) + [entry]
    _write_state_file(state_dir, state)
    return entry

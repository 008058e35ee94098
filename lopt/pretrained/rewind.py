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

A session that ran from an earlier state than the committed one (two calls started from the
same commit, the second before the first was adopted) is a branch: ``--adopt DIR --branch``
records it as a rewind to the theta it started from followed by that session, so the outer-step
counter and the GPU minutes count both, and the line goes on from the branch (:func:`rebase_branch`).
"""

from __future__ import annotations

import datetime
import os
import shutil
from typing import Any

import jax

from lopt import checkpoint

__all__ = ["INITIAL", "rebase_branch", "rewind"]

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


def rebase_branch(state_dir: str, state: dict[str, Any], branch_state: dict[str, Any]) -> dict[str, Any]:
    """Rewinds the campaign to where a branch session started and returns the state with that session appended.

    ``branch_state`` is the ``state.json`` a session wrote when it ran from an earlier campaign state
    than ``state``: its sessions but the last are the first sessions of ``state``. The campaign is
    rewound (:func:`rewind`, the current warm start kept under ``rewound/``) to the snapshot of the
    outer step the branch started from, then the branch's session is appended with its
    ``start_outer_step`` moved to the counter (the counter counts compute spent) and
    ``branched_from_outer_step`` recording where its theta came from. Writes the rewind only; the
    caller (:func:`lopt.pretrained.adoption.adopt`) writes the returned state with the session's files.

    Raises:
        ValueError: the branch did not run from an earlier state of this campaign, was adopted
            already, or the snapshot of the step it started from is not in ``thetas/`` (nothing is
            changed).

    Example:
        >>> import json, pathlib, tempfile
        >>> d = tempfile.mkdtemp()
        >>> ours = {"sessions": [{"start_outer_step": 0, "outer_steps": 5}], "outer_steps": 5}
        >>> theirs = {"sessions": [{"start_outer_step": 0, "outer_steps": 4}], "outer_steps": 4}
        >>> try:
        ...     rebase_branch(d, ours, theirs)
        ... except ValueError as e:
        ...     print(str(e).split(":")[0])
        theta-000000.safetensors is not in the campaign
    """
    from lopt.pretrained.campaign import _read_state, with_session

    ours, theirs = state["sessions"], branch_state["sessions"]
    shared = len(theirs) - 1
    if shared < 0 or shared >= len(ours) or theirs[:shared] != ours[:shared]:
        raise ValueError(f"the branch's {len(theirs)} sessions are not an earlier state of this campaign's "
                         f"{len(ours)} plus one: it was run from another campaign. Nothing was changed.")
    digest = theirs[-1].get("warm_start_digest")
    if digest and any(s.get("warm_start_digest") == digest for s in ours):
        raise ValueError("the branch's session is already in the campaign (the same warm start digest): it was "
                         "adopted before. Nothing was changed.")
    session = dict(theirs[-1])
    start = int(session["start_outer_step"])
    snapshot = os.path.join(state_dir, "thetas", f"theta-{start:06d}.safetensors")
    if not os.path.exists(snapshot):
        raise ValueError(f"{os.path.basename(snapshot)} is not in the campaign: the branch started from outer step "
                         f"{start}, whose theta the rewind needs. Nothing was changed.")
    beside = f"session {len(ours)}" if len(ours) == shared + 1 else f"sessions {shared + 1}..{len(ours)}"
    same_seed = [i + 1 for i, s in enumerate(ours[shared:], start=shared) if s.get("seed") == session.get("seed")]
    rewind(state_dir, snapshot, note=(
        f"session {len(ours) + 1} ran from the state after session {shared} (outer step {start}) beside {beside}, "
        "which it does not continue; the campaign goes on from it"
        + (f"; it drew the seed of session {same_seed[0]}, so its tasks repeat that session's" if same_seed else "")))
    state = _read_state(state_dir)
    at = int(state["outer_steps"])
    session["start_outer_step"], session["branched_from_outer_step"] = at, start
    session["heldout"] = [{**row, "campaign_step": row["campaign_step"] - start + at}
                          for row in session.get("heldout", [])]
    session["note"] = "; ".join(filter(None, [session.get("note"), f"a branch from outer step {start}"]))
    return with_session(state, session)

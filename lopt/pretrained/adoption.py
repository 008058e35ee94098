"""Bringing a campaign session that came back from a GPU call into the committed campaign state.

A session's ``--out`` folder holds its run (warm start, metrics, theta snapshots) and, when it ended
normally, its ``state.json``; :func:`adopt` makes it the campaign's new state (the step before
committing ``campaign/``), and :func:`record` writes the state of a session stopped before it could.

Usage::

    python -m lopt.pretrained.campaign --state campaign --adopt OUT/c --device "NVIDIA H100 80GB HBM3"
"""

from __future__ import annotations

import gzip
import json
import math
import os
import pathlib
import tempfile
from typing import Any

from lopt import checkpoint
from lopt.meta.metrics_log import read_metrics
from lopt.pretrained.campaign import _read_state, _session_entry, _write_state, _write_state_file
from lopt.pretrained.session_files import keep_snapshots, warm_start_source

__all__ = ["adopt", "record"]


def record(state_dir: str, run_dir: str, out: str, *, device: str, on_gpu: bool, seconds: float,
           setup_seconds: float, note: str) -> dict[str, Any]:
    """Records a session whose process was stopped before it wrote ``state.json`` (e.g. at a call's time limit).

    The run folder's ``warm_start.safetensors`` (written at every checkpoint, so at most one
    checkpoint interval old) and ``metrics.jsonl`` are what the campaign keeps; ``seconds`` and
    ``setup_seconds`` come from the session's log.
    """
    from lopt.meta.config import load_config as load_run_config

    state = _read_state(state_dir)
    cfg = load_run_config(run_dir)
    families = sorted({s["task"]["family"] for s in cfg.task.structures})
    session = _session_entry(state, run_dir, seed=cfg.seed, seconds=seconds, setup_seconds=setup_seconds,
                             flops=None, overrides=[], families=families, device=device,
                             on_gpu=on_gpu, note=note)
    session["config_sets"] = {"num_tasks": cfg.estimator.num_tasks, "unroll_length": cfg.estimator.unroll_length}
    return _write_state(state, session, out, list(cfg.task.structures))


def adopt(state_dir: str, session_dir: str, *, device: str = "NVIDIA H200", note: str = "",
          branch: bool = False) -> dict[str, Any]:
    """Makes a finished (or killed) session the campaign's new state: the step to run before committing.

    ``session_dir`` is a session's ``--out`` folder as it came back (``state.json`` when the session
    ended normally, always ``run/``). A session without ``state.json`` is :func:`record`-ed from its
    run folder (its log next to it, ``../campaign.log``, gives the set-up seconds when present).
    Copies into ``state_dir``: ``state.json`` (only if it extends the current one: the sessions
    recorded so far must be its first ones), ``warm_start.safetensors``, the metrics log as
    ``logs/session-NN-<gpu|cpu>-metrics.jsonl.gz`` and the session's ``../campaign.log`` (when it came
    back) as ``logs/session-NN-<gpu|cpu>.log``. A session whose warm start did not come back
    continues from its snapshot of the final step (:func:`~lopt.pretrained.session_files.warm_start_source`;
    the session's record says so). ``branch``: the session ran from an earlier state (its
    ``state.json`` is needed); the campaign is rewound to the theta it started from and goes on from
    it (:func:`~lopt.pretrained.rewind.rebase_branch`).
    """
    import re
    import shutil

    state = _read_state(state_dir)
    run_dir = os.path.join(session_dir, "run")
    log = os.path.join(os.path.dirname(os.path.abspath(session_dir)), "campaign.log")  # next to the session
    new_path = os.path.join(session_dir, "state.json")
    if os.path.exists(new_path):
        with open(new_path, encoding="utf-8") as f:
            new_state = json.load(f)
    else:
        text = pathlib.Path(log).read_text(encoding="utf-8") if os.path.exists(log) else ""
        found = re.search(r"set-up (\d+) s", text)
        setup = float(found.group(1)) if found else 0.0
        rows = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
        seconds = setup + (rows[-1]["seconds"] if rows else 0.0)
        new_state = record(state_dir, run_dir, tempfile.mkdtemp(prefix="lopt-adopt-"), device=device, on_gpu=device != "cpu",
                           seconds=seconds, setup_seconds=setup,
                           note=note or "stopped before writing state.json; recorded from its run folder")
    extends = new_state["sessions"][:len(state["sessions"])] == state["sessions"]
    if not extends:
        if not branch:
            raise ValueError(f"{new_path}: its sessions do not extend {state_dir}/state.json's; it was run from another "
                             "campaign state. Nothing was changed. If it ran from an earlier state of this campaign, "
                             "--branch adopts it (the current warm start is kept under rewound/).")
        if not os.path.exists(new_path):
            raise ValueError(f"--branch needs the session's state.json ({new_path}), which did not come back.")
    # before anything is written
    warm, from_snapshot = warm_start_source(session_dir, int(new_state["sessions"][-1]["outer_steps"]))
    if not extends:
        from lopt.pretrained.rewind import rebase_branch

        new_state = rebase_branch(state_dir, state, new_state)
    session = new_state["sessions"][-1]
    index = len(new_state["sessions"])
    kind = "gpu" if session.get("on_gpu") else "cpu"
    os.makedirs(os.path.join(state_dir, "logs"), exist_ok=True)
    name = os.path.join(state_dir, "logs", f"session-{index:02d}-{kind}")
    with open(os.path.join(run_dir, "metrics.jsonl"), "rb") as f:  # gzipped: the tree travels to every GPU call
        checkpoint.atomic_write(f"{name}-metrics.jsonl.gz", gzip.compress(f.read(), compresslevel=9, mtime=0))
    if os.path.exists(log):
        shutil.copyfile(log, f"{name}.log")
    if from_snapshot:
        session["note"] = "; ".join(filter(None, [session.get("note"), (
            "its warm start did not come back: the campaign continues from its last theta snapshot (the same "
            "theta) with a fresh outer-optimizer state")]))
    shutil.copyfile(warm, os.path.join(state_dir, "warm_start.safetensors"))
    _keep_best(state, new_state, run_dir, state_dir)
    keep_snapshots(session_dir, state_dir, start=session["start_outer_step"])
    _write_state_file(state_dir, new_state)
    return new_state


def _keep_best(state: dict[str, Any], new_state: dict[str, Any], run_dir: str, state_dir: str) -> None:
    """Copies the session's best-validated theta to ``best_theta.safetensors`` if it beats the campaign's best.

    The trainer writes ``theta_best.safetensors`` whenever a validation score improves within the
    session; ``new_state["best"]`` records the best over the campaign (score, campaign step,
    session), which ``--ship`` uses by default.
    """
    import shutil

    best = dict(state.get("best") or {})
    new_state["best"] = best or None
    path = os.path.join(run_dir, "theta_best.safetensors")
    if not os.path.exists(path):
        return
    extra = checkpoint.read_metadata(path).get("extra", {})
    score = float(extra.get("heldout_score", math.inf))
    if math.isfinite(score) and score < float(best.get("score", math.inf)):
        session = new_state["sessions"][-1]
        new_state["best"] = {"score": score, "session": len(new_state["sessions"]),
                             "campaign_step": session["start_outer_step"] + int(extra.get("outer_steps", 0))}
        shutil.copyfile(path, os.path.join(state_dir, "best_theta.safetensors"))

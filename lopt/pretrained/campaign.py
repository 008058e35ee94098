"""The pretrained optimizer's meta-training campaign: many short GPU sessions, one trajectory.

GPU time comes in runs of at most ~10 minutes. Each session of the campaign warm-starts from
the committed state (``campaign/warm_start.safetensors``: theta and the outer optimizer's
state, a few kB; ``campaign/state.json``: the fixed training structures and the log), meta-
trains with the ``taskset`` preset for ``--minutes`` with fresh inner tasks (a new seed per
session, so new variants are drawn), and writes the new state and its log to ``--out``. Copy
``--out``'s ``state.json`` and ``run/warm_start.safetensors`` back into ``campaign/`` and
commit them: the next session (on any machine) continues from there.

Usage::

    python -m lopt.pretrained.campaign --state campaign --out OUT --minutes 8

``state.json`` keeps, per session: date, device, seed, outer steps, seconds, inner steps per
second and the held-out scores logged; and the totals (outer steps, GPU minutes).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import time
from typing import Any

import jax

from lopt import checkpoint
from lopt.flops import xla_cost_analysis_flops
from lopt.meta.config import load_config
from lopt.meta.metrics_log import read_metrics
from lopt.meta.trainer import MetaTrainer
from lopt.pretrained.breadth import validation_structures

__all__ = ["HELDOUT_FAMILIES", "campaign_config", "main", "run_session"]

#: Seed and count of the validation variants (held-out dynamic values of every training structure):
#: fixed, so every session validates on the same configs and none is ever trained on.
VALIDATION_SEED = 0
VALIDATION_VARIANTS = 2

#: Families never trained on: validation during training and the held-out benchmark use them.
HELDOUT_FAMILIES = ("conv_fc", "maf", "word_rnn_lm")


def _read_state(state_dir: str) -> dict[str, Any]:
    path = os.path.join(state_dir, "state.json")
    if not os.path.exists(path):
        return {"sessions": [], "structures": [], "outer_steps": 0, "gpu_minutes": 0.0}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_state_file(state_dir: str, state: dict[str, Any]) -> None:
    """Writes ``state_dir/state.json`` atomically (a killed write leaves the previous file)."""
    checkpoint.atomic_write(os.path.join(state_dir, "state.json"), json.dumps(state, indent=1).encode("utf-8"))


def campaign_config(state: dict[str, Any], *, minutes: float, init_from: str, overrides: list[str],
                    families: list[str] | None = None, validation: bool = False) -> Any:
    """The ``taskset`` preset with the campaign's structures, a fresh seed and the time limit.

    The structures are fixed in ``state.json`` (one per training family, drawn once from the
    taskset catalogue without :data:`HELDOUT_FAMILIES`), so sessions skip the catalogue and
    always train the same programs; the held-out families are scored by
    ``benchmarks/pretrained_heldout.py``, and training-time validation uses held-out variants of
    the training structures. Sessions evaluate once, at their end. With ``validation`` the
    structures are those the campaign validates on (pinned when it was first widened:
    :mod:`lopt.pretrained.breadth`).
    """
    seed = len(state["sessions"]) + 1
    # a session keeps its warm start and theta snapshots, never the inner tasks' state (gigabytes:
    # writing it took ~20 s a minute on the H200, a fifth of session 27)
    sets = [f"seed={seed}", f"trainer.max_minutes={minutes}", "trainer.full_checkpoints=false",
            "trainer.eval_every=1000000", "trainer.eval_steps=500", "task.heldout_per_bucket=1",
            "task.configs_per_bucket=4", "normalizer.num_steps=500", "outer.learning_rate=3e-4",
            f"task.heldout_seed={VALIDATION_SEED}", f"task.heldout_per_bucket={VALIDATION_VARIANTS}",
            "outer.bucket_weighting=unit", "trainer.theta_history=true"]
    if init_from:
        sets.append(f"trainer.init_from={init_from}")
    cfg = load_config("taskset", sets + list(overrides))
    if init_from:  # the warm start fixes the architecture (a rewind may start a line of another config)
        from lopt.meta.warm_start import file_optimizer

        arch = file_optimizer(init_from)
        cfg.lopt.name = arch.name
        cfg.lopt.config = {**arch.config(), **cfg.lopt.config}  # plus execution options set by the session
    pool = validation_structures(state) if validation else state["structures"]
    structures = [s for s in pool if not families or s["task"]["family"] in families]
    if families and not structures:
        raise ValueError(f"--families {families} selects none of the campaign's structures "
                         f"({sorted(s['task']['family'] for s in pool)}).")
    if structures:
        cfg.task.structures = structures
        cfg.task.num_buckets = len(structures)
    return cfg


def run_session(state_dir: str, out: str, *, minutes: float, overrides: list[str] = (),
                reserve_minutes: float = 2.0, families: list[str] | None = None) -> dict[str, Any]:
    """Runs one session and writes ``out/state.json`` and ``out/run/`` (see the module docs).

    ``minutes`` is the session's whole wall time: set-up and compilation count, and meta-training
    stops ``reserve_minutes`` early to leave time for the final held-out evaluation.
    """
    state = _read_state(state_dir)
    warm = os.path.join(state_dir, "warm_start.safetensors")
    cfg = campaign_config(state, minutes=minutes, init_from=warm if os.path.exists(warm) else "",
                          overrides=list(overrides), families=families)
    start = time.time()
    run_dir = os.path.join(out, "run")
    trainer = MetaTrainer(cfg, run_dir, progress=False)
    setup_seconds = time.time() - start
    structures = [b.structure.to_dict() for b in trainer.engine.buckets]
    references = {}
    if trainer.config.trainer.eval_every:  # the same validation, before training: the warm start and Adam 1e-3
        from lopt.meta.warm_start import load_warm_start

        initial_theta = trainer.setup.lopt.init(jax.random.key(0))
        warm_theta = load_warm_start(warm, trainer.setup.lopt)[0] if os.path.exists(warm) else initial_theta
        initial_label = ("initial theta (= Adam 1e-3)" if getattr(trainer.setup.lopt, "step_size", "adam") == "adam"
                         else "initial theta (= Adam's direction, Prodigy's distance step)")
        for label, theta in ((initial_label, initial_theta), ("warm start", warm_theta)):
            references[label] = trainer.evaluate(theta, 0)
            print(f"[campaign] validation of the {label}: {references[label]['heldout_normalized_loss']:.4f}",
                  flush=True)
    # the session's wall time bounds the loop: the trainer's own clock starts only at its first outer
    # step, after the bucket programs finished compiling (85 s after set-up in cold session 36)
    deadline = max(start + 60.0 * (minutes - reserve_minutes), time.time() + 30.0)
    print(f"[campaign] set-up {setup_seconds:.0f} s; meta-training (compilation included) for "
          f"{(deadline - time.time()) / 60.0:.1f} min on {len(trainer.engine.buckets)} structures", flush=True)
    result = trainer.run(deadline=deadline)
    seconds = time.time() - start
    print(f"[campaign] {result['step']} outer steps, {seconds:.0f} s, {result['inner_steps_per_s']:,.0f} inner steps/s; "
          f"last {result['last_metrics']}; eval {result['last_eval']}", flush=True)
    flops = sum(c.flops for c in trainer.engine.program_flops())
    session = _session_entry(state, run_dir, seed=cfg.seed, seconds=time.time() - start, setup_seconds=setup_seconds,
                             flops=flops, overrides=list(overrides),
                             families=sorted({s["task"]["family"] for s in structures}),
                             device=str(jax.devices()[0].device_kind), on_gpu=jax.devices()[0].platform == "gpu")
    session["compile_seconds"] = [[round(a, 1), round(b, 1)] for a, b in trainer.engine.compile_seconds]
    # lopt.flops multiplies every scan body by its length; XLA's cost analysis counts a loop body
    # once (low by the unroll length and sequence lengths), the only figure sessions before 26 kept
    session["flops_counter"] = "lopt.flops.jaxpr_flops"
    session["xla_cost_analysis_flops_per_outer_step"] = sum(
        xla_cost_analysis_flops(c, default=0.0) for c in trainer.engine._compiled)
    if references:
        session["validation_references"] = references
    return _write_state(state, session, out, structures)


def _session_entry(state: dict[str, Any], run_dir: str, *, seed: int, seconds: float, setup_seconds: float,
                   flops: float | None, overrides: list[str], families: list[str], device: str,
                   on_gpu: bool, note: str = "") -> dict[str, Any]:
    """One session's record, read from its run folder (metrics, evaluations, warm start)."""
    rows = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    if not rows:
        raise ValueError(f"{run_dir}: no metrics.jsonl rows; the session trained no outer step, nothing to record.")
    warm = os.path.join(run_dir, "warm_start.safetensors")
    steps = int(load_warm_start_steps(warm))
    per_step = rows[-1]["inner_steps"] / rows[-1]["step"]  # inner steps per outer step (every bucket, both members)
    steady = [r for r in rows if 5 < r["step"] <= steps]
    step_seconds = ((steady[-1]["seconds"] - steady[0]["seconds"]) / max(1, steady[-1]["step"] - steady[0]["step"])
                    if len(steady) > 2 else float("nan"))
    evals_path = os.path.join(run_dir, "eval.jsonl")
    evals = read_metrics(evals_path) if os.path.exists(evals_path) else []
    last = [r for r in rows if r["step"] == steps][-1]  # the row of the step the warm start holds
    session: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device, "devices": jax.device_count() if on_gpu else 1, "seed": seed,
        "start_outer_step": state["outer_steps"], "outer_steps": steps,
        "seconds": round(seconds, 1), "setup_seconds": round(setup_seconds, 1),
        "inner_steps_per_s": round(steps * per_step / last["seconds"], 1),
        "last_metrics": last,
        "steady_seconds_per_outer_step": step_seconds,
        "steady_inner_steps_per_s": per_step / step_seconds if math.isfinite(step_seconds) else None,
        "heldout": [{**row, "campaign_step": state["outer_steps"] + row["step"]} for row in evals],
        "warm_start_digest": checkpoint.stored_digest(warm),
        "families": families, "overrides": overrides, "on_gpu": on_gpu,
    }
    if flops is not None:
        session["flops_per_outer_step"] = flops
        session["achieved_tflops"] = flops / step_seconds / 1e12 if math.isfinite(step_seconds) else None
    if note:
        session["note"] = note
    return session


def with_session(state: dict[str, Any], session: dict[str, Any]) -> dict[str, Any]:
    """``state`` with ``session`` appended: its outer steps and its GPU or CPU minutes added to the totals."""
    minutes = session["seconds"] / 60.0
    on_gpu = session["on_gpu"]
    return {**state, "sessions": state["sessions"] + [session],
            "outer_steps": state["outer_steps"] + session["outer_steps"],
            "gpu_minutes": round(state.get("gpu_minutes", 0.0) + (minutes if on_gpu else 0.0), 2),
            "cpu_minutes": round(state.get("cpu_minutes", 0.0) + (0.0 if on_gpu else minutes), 2)}


def _write_state(state: dict[str, Any], session: dict[str, Any], out: str, structures: list) -> dict[str, Any]:
    new_state = with_session({**state, "structures": state["structures"] or structures}, session)
    _write_state_file(out, new_state)
    return new_state


def load_warm_start_steps(path: str) -> int:
    """The outer step a session's ``warm_start.safetensors`` was written at (digest-checked)."""
    from lopt.meta.warm_start import file_optimizer, load_warm_start

    _, _, extra = load_warm_start(path, file_optimizer(path))
    return int(extra["extra"]["outer_steps"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--state", default="campaign", help="the committed campaign folder")
    parser.add_argument("--out", help="where the new state and the run go (required unless --ship)")
    parser.add_argument("--minutes", type=float, default=8.0, help="meta-training minutes of this session")
    parser.add_argument("--reserve-minutes", type=float, default=2.0,
                        help="stop meta-training this long before --minutes end (the final held-out evaluation)")
    parser.add_argument("--set", action="append", default=[], help="config overrides (section.key=value)")
    parser.add_argument("--families", nargs="*", default=None,
                        help="train only the campaign's structures of these families (e.g. a CPU session)")
    parser.add_argument("--compile-cache", default=None, metavar="DIR",
                        help="JAX's persistent compilation cache folder (reused by later sessions on the same "
                             "kind of device: the bucket programs are then loaded, not compiled)")
    parser.add_argument("--record", default=None, metavar="RUN_DIR",
                        help="do not train: record a session whose process was stopped before writing state.json "
                             "(its run folder's warm start and metrics) into --out")
    parser.add_argument("--adopt", default=None, metavar="SESSION_DIR",
                        help="do not train: make a session's --out folder (as it came back) the campaign's state")
    parser.add_argument("--branch", action="store_true",
                        help="with --adopt: the session ran from an earlier campaign state; rewind to the theta it "
                             "started from and go on from the session (lopt.pretrained.rewind.rebase_branch)")
    parser.add_argument("--device", default="NVIDIA H200", help="with --record/--adopt: the device it ran on")
    parser.add_argument("--seconds", type=float, default=0.0, help="with --record: the session's wall seconds")
    parser.add_argument("--setup-seconds", type=float, default=0.0, help="with --record: its set-up seconds")
    parser.add_argument("--note", default="", help="with --record/--rewind/--widen: what happened, why")
    parser.add_argument("--rewind", default=None, metavar="THETA",
                        help="do not train: make THETA (a theta file, or 'initial') the next session's warm start, "
                             "keeping the current one under rewound/ (lopt.pretrained.rewind)")
    parser.add_argument("--widen", type=int, default=None, metavar="N",
                        help="do not train: add N new structures of every training family to the training set, "
                             "validation kept on the structures validated so far (lopt.pretrained.breadth)")
    parser.add_argument("--widen-seed", type=int, default=1, help="with --widen: the catalogue's seed")
    parser.add_argument("--ship", nargs="?", const="", default=None, metavar="THETA",
                        help="do not train: write the campaign's theta (or THETA) as lopt's pretrained 'default'")
    args = parser.parse_args(argv)
    if args.ship is not None:
        from lopt.pretrained.shipping import ship

        print(f"wrote {ship(args.state, theta_path=args.ship or None)}")
        return 0
    if args.rewind:
        from lopt.pretrained.rewind import rewind

        entry = rewind(args.state, args.rewind, note=args.note)
        print(f"rewound the campaign at outer step {entry['at_outer_step']} to {entry['source']}; commit {args.state}/")
        return 0
    if args.widen is not None:
        from lopt.pretrained.breadth import widen

        entry = widen(args.state, per_family=args.widen, seed=args.widen_seed, note=args.note)
        print(f"added {entry['added']} structures to the {entry['structures_before']} the campaign trained on "
              f"({', '.join(entry['families'])}); commit {args.state}/")
        return 0
    from lopt.pretrained.adoption import adopt, record

    if args.adopt:
        state = adopt(args.state, args.adopt, device=args.device, note=args.note, branch=args.branch)
        print(f"adopted session {len(state['sessions'])}: the campaign is at {state['outer_steps']} outer steps; "
              f"commit {args.state}/")
        return 0
    if not args.out:
        parser.error("--out DIR is required to run or record a session")
    if args.record:
        state = record(args.state, args.record, args.out, device=args.device, on_gpu=args.device != "cpu",
                       seconds=args.seconds, setup_seconds=args.setup_seconds, note=args.note)
        print(f"recorded session {len(state['sessions'])}: {state['sessions'][-1]['outer_steps']} outer steps")
        return 0
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    if args.compile_cache:
        jax.config.update("jax_compilation_cache_dir", args.compile_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    state = run_session(args.state, args.out, minutes=args.minutes, overrides=args.set, families=args.families,
                        reserve_minutes=args.reserve_minutes)
    print(json.dumps({k: v for k, v in state.items() if k != "structures"} | {"sessions": len(state["sessions"])}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A mixture run's set-up programs made by worker processes, before the run's own set-up.

A cold mixture set-up traces, fits with and compiles one PES program and one normaliser-fit
program per structure, and every trace holds the one interpreter lock: on a 16-core H100 host
the 16 x 8 ``taskset`` set-up spent 73 s of its 117 s on them (stop 47); with the work split over
processes it spent 55 s (stop 48: by then XLA's compiles keep the 16 cores busy). A run whose
programs are all in the caches instead sets up in seconds: the fits come from
:class:`~lopt.meta.structure_fit_cache.StructureFitCache`, the lowered programs from
:class:`~lopt.meta.program_cache.ProgramCache` and XLA's executables from JAX's persistent
compilation cache.

:func:`prewarm` fills those caches in parallel: it splits the run's structures over worker
processes (``python -m lopt.meta.prewarm``, one JSON request on stdin), each of which builds the
run's engine for its share of the structures (:func:`lopt.meta.trainer.bucket_engine`, with the
structures' bucket numbers in the run, so it draws the very configs the run draws), fits their
normalisers and exports and compiles their programs into the run's cache folders, then exits. The
run then builds its own engine, finding everything cached. A worker only ever adds cache entries,
each checked against its key when read: a worker that fails, or a program whose key differs in the
run (a learned optimizer the run was handed rather than built from its config), costs time, never a
wrong result; the run makes what it misses itself, as without workers.

After every worker has succeeded, a record (``prewarm-<digest>.json`` beside the program cache) names
the request's digest: the config, the structures, lopt's sources, JAX's version, the backend and
``XLA_FLAGS``. A run that finds its record starts no workers (its caches are warm).

``LOPT_PREWARM_LOGS`` names a folder that keeps a copy of every worker's log (in a new subfolder
``prewarm-<time>-<pid>/worker-<n>.log`` per call, never overwriting one: its compile lines and
phases), for finding where a slow set-up spends its time.

``LOPT_PREWARM_WORKERS`` sets the number of workers (``0`` or ``1``: none); the default is one per
structure, at most one per CPU core and at most 16, on a machine of at least 8 cores, and none
below that (each worker imports JAX and loads its datasets again: on 2 cores that costs more than
it saves).

Example:
    >>> from lopt.meta.prewarm import prewarm_worker_count
    >>> import os; os.environ["LOPT_PREWARM_WORKERS"] = "0"
    >>> prewarm_worker_count(16)
    0
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax

from lopt import checkpoint
from lopt import tasks as lopt_tasks
from lopt.env_settings import parse_count
from lopt.meta.normalizer import default_cache_dir
from lopt.meta.program_cache import code_fingerprint

__all__ = ["LOGS_ENV", "WORKERS_ENV", "PrewarmReport", "load_datasets_beside", "prewarm", "prewarm_worker_count"]

#: Number of set-up worker processes (``0``/``1``: none).
WORKERS_ENV = "LOPT_PREWARM_WORKERS"
#: A folder that keeps a copy of every worker's log.
LOGS_ENV = "LOPT_PREWARM_LOGS"
_MAX_DEFAULT_WORKERS = 16
_MIN_CORES = 8
_LOG = logging.getLogger("lopt.meta")


@dataclasses.dataclass(frozen=True)
class PrewarmReport:
    """What :func:`prewarm` did.

    Attributes:
        workers: worker processes started (0: none were needed or none are configured).
        failed: workers that did not finish (their structures are set up by the run itself).
        seconds: wall time from the first start to the last exit.
        record: the record file that marks this request as done, or ``None``.
        phases: one entry per worker that finished: its buckets and the seconds of its phases
            (``startup``: from its start to reading the request, Python and JAX imports;
            ``engine``: building the engine, datasets and normaliser fits while its programs
            compile; ``programs``: waiting for the programs after that; ``total``).
    """

    workers: int
    failed: int
    seconds: float
    record: pathlib.Path | None
    phases: tuple[dict[str, Any], ...] = ()

    def slowest(self) -> dict[str, Any] | None:
        """The worker phases of the worker that finished last (``None`` without any)."""
        return max(self.phases, key=lambda p: p["total"], default=None)


def prewarm_worker_count(num_structures: int) -> int:
    """Workers for a run of ``num_structures``: ``$LOPT_PREWARM_WORKERS``, else one per structure
    (at most 16, at most one per core) on a machine of at least 8 cores, and none on a smaller one."""
    setting = os.environ.get(WORKERS_ENV, "").strip()
    if not setting:
        cores = os.cpu_count() or 1
        count = min(_MAX_DEFAULT_WORKERS, cores) if cores >= _MIN_CORES else 0
    else:
        count = parse_count(WORKERS_ENV, setting, minimum=0, expected="a non-negative integer (0 or 1: no workers)")
    return min(count, num_structures)


def _jax_settings() -> dict[str, Any]:
    """The parent's JAX settings a worker must share to write the caches the parent reads."""
    return {"jax_compilation_cache_dir": jax.config.jax_compilation_cache_dir,
            "jax_persistent_cache_min_compile_time_secs": jax.config.jax_persistent_cache_min_compile_time_secs,
            "jax_enable_x64": bool(jax.config.jax_enable_x64),
            "jax_default_matmul_precision": jax.config.jax_default_matmul_precision}


def _request_digest(config: dict) -> str:
    identity = {"config": config, "code": code_fingerprint(),
                "jax": jax.__version__, "backend": jax.default_backend(),
                "device": jax.devices()[0].device_kind, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                "settings": _jax_settings()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:24]


def prewarm(cfg: Any, structures: Sequence[Any], *, workers: int | None = None,
            timeout_s: float = 1800.0) -> PrewarmReport:
    """Fills the caches a mixture run's set-up reads, in worker processes (see the module docs).

    Args:
        cfg: the run's :class:`~lopt.meta.config.MetaTrainConfig`.
        structures: the run's training structures, in bucket order.
        workers: worker processes (default :func:`prewarm_worker_count`); ``0`` or ``1``: none.
        timeout_s: a worker still running after this long is stopped (the run sets up its share).

    Returns:
        A :class:`PrewarmReport` (``workers=0`` when nothing was started).
    """
    structures = [lopt_tasks.TaskConfig(s).to_dict() for s in structures]
    workers = prewarm_worker_count(len(structures)) if workers is None else min(workers, len(structures))
    if workers <= 1:
        return PrewarmReport(0, 0, 0.0, None)
    config = cfg.to_dict()
    config["task"]["structures"] = structures  # the workers draw no catalogue
    folder = pathlib.Path(cfg.normalizer.cache_dir or default_cache_dir())
    record = folder / f"prewarm-{_request_digest(config)}.json"  # the config holds the structures
    if record.exists():
        return PrewarmReport(0, 0, 0.0, record)
    groups = [list(range(len(structures)))[w::workers] for w in range(workers)]
    env = {**os.environ, WORKERS_ENV: "0", "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "LOPT_COST_WORKERS": "0"}
    start = time.perf_counter()
    running: list = []
    with tempfile.TemporaryDirectory(prefix="lopt-prewarm-") as logs:
        try:
            for w, ids in enumerate(groups):
                request = {"config": config, "structures": [structures[i] for i in ids], "bucket_ids": ids,
                           "jax": _jax_settings(), "launched": time.time()}
                log = open(os.path.join(logs, f"worker-{w}.log"), "w+")  # noqa: SIM115 - closed by _stop
                running.append((subprocess.Popen([sys.executable, "-m", "lopt.meta.prewarm"], stdin=subprocess.PIPE,
                                                 stdout=log, stderr=subprocess.STDOUT, env=env, text=True), log, ids))
                with contextlib.suppress(OSError):  # a worker that already exited: its status says why
                    running[-1][0].stdin.write(json.dumps(request))
                    running[-1][0].stdin.close()
            failed = _wait(running, start + timeout_s)
            phases = tuple(p for p in (_phases(log) for _, log, _ in running) if p is not None)
        finally:  # Ctrl-C, an error, or done: no worker outlives this call
            _stop(running)
            _keep_logs([log.name for _, log, _ in running])
    seconds = time.perf_counter() - start
    if not failed:
        checkpoint.atomic_write(record, (json.dumps({"structures": len(structures), "workers": workers,
                                                     "seconds": round(seconds, 1), "code": code_fingerprint()})
                                         + "\n").encode("utf-8"))
    report = PrewarmReport(workers, failed, seconds, None if failed else record, phases)
    slowest = report.slowest()
    _LOG.info("prewarm: %d structures set up by %d worker processes in %.1f s%s%s", len(structures), workers, seconds,
              f" ({failed} failed: the run sets their structures up itself)" if failed else "",
              "" if slowest is None else "; the slowest, buckets {}: {}".format(
                  slowest["buckets"], ", ".join(f"{k} {slowest[k]:.1f} s" for k in _PHASES)))
    return report


def load_datasets_beside(structures: Sequence[Any]) -> threading.Thread:
    """Builds one task of every structure in a daemon thread, which loads their datasets into this
    process's dataset caches while the set-up workers run (the run's engine then finds them loaded).

    The thread only warms caches: a structure that fails to build is skipped here, and the engine
    raises its error when it builds the same task. ``join()`` the thread before building the engine,
    so the two never build at once. On a 16-core H100 host the run's own dataset loads took ~10 s
    after the workers (stop 48); beside them they cost no wall time.

    Example:
        >>> load_datasets_beside([{"family": "quadratic", "dim": 3}]).join()
    """
    def load() -> None:
        start = time.perf_counter()
        for structure in structures:
            with contextlib.suppress(Exception):  # the engine raises the real error
                lopt_tasks.build(structure)
        _LOG.info("prewarm: datasets of %d structures loaded beside the workers in %.1f s", len(structures),
                  time.perf_counter() - start)

    thread = threading.Thread(target=load, name="lopt-load-datasets", daemon=True)
    thread.start()
    return thread


_PHASES = ("startup", "engine", "programs", "total")
_PHASE_LINE = "[prewarm worker] phases "


def _phases(log: Any) -> dict[str, Any] | None:
    """The phase seconds a worker printed last in its log (``None``: it printed none)."""
    log.seek(0)
    found = None
    for line in log.read().splitlines():
        if line.startswith(_PHASE_LINE):
            with contextlib.suppress(ValueError):
                found = json.loads(line[len(_PHASE_LINE):])
    return found


def _keep_logs(paths: Sequence[str]) -> None:
    """Copies the workers' logs to ``$LOPT_PREWARM_LOGS`` when it is set (an unwritable folder only warns)."""
    target = os.environ.get(LOGS_ENV, "").strip()
    if not target:
        return
    try:
        folder = pathlib.Path(target, f"prewarm-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        folder.mkdir(parents=True, exist_ok=False)
        for path in map(pathlib.Path, paths):
            checkpoint.atomic_write(folder / path.name, path.read_bytes())
    except OSError as error:
        _LOG.warning("prewarm: could not keep the workers' logs in %s=%s: %s", LOGS_ENV, target, error)


def _wait(running: list, deadline: float) -> int:
    """Waits for every worker (stopping those past ``deadline``); returns how many failed."""
    failed = 0
    for process, log, ids in running:
        try:
            code = process.wait(timeout=max(1.0, deadline - time.perf_counter()))
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        if code != 0:
            failed += 1
            log.seek(0)
            tail = "".join(line for line in log.read().splitlines(keepends=True)[-15:]
                           if "warning" not in line.lower())
            _LOG.warning("prewarm: the worker for buckets %s exited with status %s; the run sets them up "
                         "itself. Its last lines:\n%s", ids, code, tail)
    return failed


def _stop(running: list) -> None:
    """Kills the workers still running and closes every worker's log."""
    for process, log, _ in running:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def _worker_main() -> int:
    """A worker: builds the engine of its structures, waits for their programs, exits."""
    request = json.load(sys.stdin)
    for name, value in request["jax"].items():
        if value is not None:
            jax.config.update(name, value)
    # each line stamped with the milliseconds since the worker imported logging (its start, near
    # enough), for the timeline of its set-up
    logging.basicConfig(level=logging.INFO, format="[%(name)s at %(relativeCreated).0f ms] %(message)s")
    from lopt.meta.config import MetaTrainConfig
    from lopt.meta.trainer import bucket_engine

    start = time.perf_counter()
    startup = max(0.0, time.time() - request.get("launched", time.time()))
    cfg = MetaTrainConfig.from_dict(request["config"])
    engine = bucket_engine(cfg, request["structures"], request["bucket_ids"])
    built = time.perf_counter()
    engine.wait_for_programs()
    done = time.perf_counter()
    phases = {"buckets": request["bucket_ids"], "startup": round(startup, 2), "engine": round(built - start, 2),
              "programs": round(done - built, 2), "total": round(startup + done - start, 2)}
    print(_PHASE_LINE + json.dumps(phases), flush=True)
    return 0


if __name__ == "__main__":
    try:
        status = _worker_main()
    except BaseException:  # noqa: BLE001 - reported in the worker's log, which the parent shows
        import traceback

        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # Every cache file is written (atomically) by now. An ordinary exit tears down XLA under the
    # compile threads' daemon threads, which aborts (status -6, "FATAL: exception not rethrown";
    # 7 of 16 workers on an H100): leave without the teardown.
    os._exit(status)

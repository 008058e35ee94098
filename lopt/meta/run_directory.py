"""The output directory of a meta-training run: never clobbered, locked, resumed from its own config.

A run directory holds ``config.json`` (the run's effective config, loadable with
:func:`lopt.meta.load_config`), ``config_history.jsonl`` (one line per start, resume or
restart, with every config change as ``[old, new]``), ``metrics.jsonl``, ``eval.jsonl``,
``checkpoints/``, ``theta.safetensors`` and the report files. :func:`open_run` is called by
:meth:`lopt.meta.MetaTrainer.run` before anything is written:

* a **new run** into a directory that already holds a run is refused
  (:class:`~lopt.output_dir.OutputExistsError`); ``lopt train --overwrite`` first moves the
  old run into ``previous-<time>/`` with :func:`clear_for_new_run`;
* a **resume** needs the directory and its ``config.json``; the given config may differ from
  the saved one only in :data:`RESUME_SAFE_KEYS` (settings that do not change the outer-step
  trajectory nor the shapes of the saved state), and ``trainer.outer_steps`` may not fall below
  the step already reached. A run killed before its first checkpoint restarts from step 0; its
  logs are moved into ``before-restart-<time>/`` first, so no step is recorded twice;
* the directory is locked (:class:`~lopt.output_dir.DirectoryLock`) until the run ends.

Example:
    >>> import tempfile
    >>> from lopt.meta.config import load_config
    >>> out = tempfile.mkdtemp()
    >>> run = open_run(out, load_config("quickstart", ["trainer.outer_steps=30"]), resume=False)
    >>> run.release()
    >>> new = load_config(out, ["trainer.outer_steps=60"])
    >>> run = open_run(out, new, resume=True)
    >>> run.changes
    {'trainer.outer_steps': [30, 60]}
    >>> run.release()
    >>> open_run(out, load_config(out, ["outer.learning_rate=0.1"]), resume=True)
    Traceback (most recent call last):
    ...
    ValueError: cannot resume ...: outer.learning_rate is 0.003 in its config.json but 0.1 now; ...
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
from typing import Any

from lopt import checkpoint
from lopt.meta.checkpoints import CheckpointManager
from lopt.meta.config import MetaTrainConfig, load_config
from lopt.meta.metrics_log import MetricsLog
from lopt.output_dir import DirectoryLock, OutputExistsError, claim, existing_outputs, move_aside

__all__ = ["RESUME_SAFE_KEYS", "RUN_OUTPUTS", "RunDirectory", "check_theta_matches_run", "checkpoint_folder",
           "clear_for_new_run", "config_changes", "latest_checkpoint_step", "open_run", "resume_config"]

CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"
THETA_FILE = "theta.safetensors"
LOGS = ("metrics.jsonl", "eval.jsonl")

#: What a run writes into its directory (a new run refuses a directory holding any of them).
RUN_OUTPUTS = (CONFIG_FILE, HISTORY_FILE, *LOGS, "checkpoints", THETA_FILE, "theta_best.safetensors",
               "warm_start.safetensors", "summary.md", "comparison.json", "meta_training.png", "learning_curves.png")

#: Config keys a resume may change: they decide how long the run goes on, how often it is
#: evaluated and checkpointed, and the comparison after training, but not the outer-step
#: trajectory (the steps already taken are reproduced exactly) nor the shapes of the saved state.
#: ``trainer.eval_tasks``/``eval_steps`` are not among them: they change what ``eval.jsonl``
#: measures half-way through a run.
RESUME_SAFE_KEYS = frozenset({
    "trainer.outer_steps", "trainer.eval_every", "trainer.checkpoint_every", "trainer.checkpoint_minutes",
    "trainer.keep_checkpoints", "final_eval.steps", "final_eval.seeds", "final_eval.adam_learning_rates",
    "final_eval.enabled", "normalizer.cache_dir", "trainer.max_minutes",
})


def _flat(config: MetaTrainConfig) -> dict[str, Any]:
    flat = {}
    for key, value in config.to_dict().items():
        if isinstance(value, dict) and dataclasses.is_dataclass(getattr(config, key)):
            flat.update({f"{key}.{name}": v for name, v in value.items()})
        else:
            flat[key] = value
    return flat


def config_changes(old: MetaTrainConfig, new: MetaTrainConfig) -> dict[str, list]:
    """``{"section.key": [old, new]}`` for every setting that differs (dict settings compared whole).

    Example:
        >>> a = load_config("quickstart")
        >>> config_changes(a, load_config("quickstart", ["seed=2", "trainer.eval_every=5"]))
        {'seed': [0, 2], 'trainer.eval_every': [250, 5]}
    """
    before, after = _flat(old), _flat(new)
    return {key: [before.get(key), after.get(key)] for key in after if before.get(key) != after.get(key)}


def _show(value: Any) -> str:
    return json.dumps(value)


def checkpoint_folder(out: str | os.PathLike, config: MetaTrainConfig | None = None) -> pathlib.Path:
    """Where a run's checkpoints go: ``trainer.checkpoint_dir`` if the config sets one, else ``out/checkpoints``."""
    elsewhere = getattr(config.trainer, "checkpoint_dir", "") if config is not None else ""
    return pathlib.Path(elsewhere) if elsewhere else pathlib.Path(out) / "checkpoints"


def latest_checkpoint_step(out: str | os.PathLike, config: MetaTrainConfig | None = None) -> int | None:
    """The newest checkpoint's step of the run in ``out`` (``None``: no checkpoint).

    Args:
        out: the run directory.
        config: the run's config (its ``trainer.checkpoint_dir``); default: the saved ``config.json``.
    """
    if config is None and (pathlib.Path(out) / CONFIG_FILE).is_file():
        config = load_config(str(out))
    folder = checkpoint_folder(out, config)
    return CheckpointManager(folder, keep=None).latest_step() if folder.is_dir() else None


def _require_run(out: pathlib.Path) -> None:
    if not out.is_dir():
        raise FileNotFoundError(f"cannot resume {str(out)!r}: it does not exist; start a new run with "
                                f"`lopt train --out {out}` (without --resume).")
    if not (out / CONFIG_FILE).is_file():
        present = existing_outputs(out, RUN_OUTPUTS)
        what = f"holds {', '.join(present)} but no {CONFIG_FILE}" if present else "holds no run"
        raise FileNotFoundError(f"cannot resume {str(out)!r}: it {what}; start a new run with "
                                f"`lopt train --out DIR` in an empty directory.")


def resume_config(out: str | os.PathLike, source: str | None = None, overrides: list[str] | tuple = ()
                  ) -> tuple[MetaTrainConfig, dict[str, list]]:
    """The config of ``lopt train --out OUT --resume [SOURCE] [--set ...]``.

    The run's saved ``config.json`` is the base. A ``source`` (preset or file) given again must
    agree with it; ``--set`` overrides may change only :data:`RESUME_SAFE_KEYS`.

    Returns:
        ``(config, changes)`` with ``changes`` as in :func:`config_changes`.

    Raises:
        FileNotFoundError: ``out`` or its ``config.json`` is missing.
        ValueError: a setting that differs from the saved config without an explicit
            ``--set``, or an explicit change of a key that cannot change (names the key and both values).
    """
    out = pathlib.Path(out)
    _require_run(out)
    saved = load_config(str(out))
    requested = load_config(source, overrides) if source is not None else load_config(str(out), overrides)
    explicit = {item.split("=", 1)[0].strip() for item in overrides}
    changes = config_changes(saved, requested)
    for key, (old, new) in changes.items():
        if key not in explicit:
            raise ValueError(
                f"cannot resume {str(out)!r}: {key} is {_show(old)} in its {CONFIG_FILE} but {_show(new)} in "
                f"{source!r}; resume without a config argument to use the saved config"
                + (f", or pass --set {key}={_show(new)} to change it." if key in RESUME_SAFE_KEYS else "."))
    _check_changes(out, changes)
    return requested, changes


def _check_changes(out: pathlib.Path, changes: dict[str, list]) -> None:
    for key, (old, new) in changes.items():
        if key not in RESUME_SAFE_KEYS:
            raise ValueError(
                f"cannot resume {str(out)!r}: {key} is {_show(old)} in its {CONFIG_FILE} but {_show(new)} now; "
                f"it cannot change on resume (it would change the training or its saved state). Settings a resume "
                f"may change: {', '.join(sorted(RESUME_SAFE_KEYS))}. To train with {key}={_show(new)}, start a "
                f"new run from this config: `lopt train {out / CONFIG_FILE} --set {key}={_show(new)} --out NEW_DIR`.")


def clear_for_new_run(out: str | os.PathLike, *, overwrite: bool, config: MetaTrainConfig | None = None
                      ) -> pathlib.Path | None:
    """Refuses a directory that holds a run, or (``overwrite``) moves that run into ``previous-<time>/``.

    A ``trainer.checkpoint_dir`` outside ``out`` that holds checkpoints counts as part of the run
    (with ``overwrite`` its checkpoints move into its own ``previous-<time>/``).

    Returns:
        The sub-folder the old run was moved to, or ``None``.

    Raises:
        OutputExistsError: ``out`` holds a run and ``overwrite`` is false; the message offers
            ``--resume`` and ``--overwrite``.
    """
    hint = (f"continue it with `lopt train --out {out} --resume`, or pass --overwrite to move it into a "
            "previous-<time>/ sub-folder and start afresh.")
    folder = checkpoint_folder(out, config)
    outside = folder.resolve() != (pathlib.Path(out) / "checkpoints").resolve()
    if outside and folder.is_dir():
        old = [p.name for p in folder.iterdir() if p.is_file() and p.name.startswith("ckpt_")]
        if old and not overwrite:
            raise OutputExistsError(f"trainer.checkpoint_dir {str(folder)!r} already holds checkpoints of a run "
                                    f"({', '.join(sorted(old)[:3])}); {hint}")
        if old:
            move_aside(folder, old)
    return claim(out, RUN_OUTPUTS, overwrite=overwrite, what="a meta-training run", hint=hint)


@dataclasses.dataclass
class RunDirectory:
    """An opened run directory: locked until :meth:`release`.

    Attributes:
        path: the directory.
        resume_step: the checkpoint step the run continues from (0 for a new or restarted run).
        changes: config changes applied by this resume (``{"section.key": [old, new]}``).
        notes: messages for the user (a restart, files moved aside).
    """

    path: pathlib.Path
    lock: DirectoryLock
    resume_step: int = 0
    changes: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)

    def release(self) -> None:
        """Unlocks the directory."""
        self.lock.release()


def _write_config(out: pathlib.Path, config: MetaTrainConfig) -> None:
    checkpoint.atomic_write(out / CONFIG_FILE, (json.dumps(config.to_dict(), indent=2) + "\n").encode("utf-8"))


def _record(out: pathlib.Path, step: int, event: str, **fields: Any) -> None:
    MetricsLog(out / HISTORY_FILE).write(step, {"event": event, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                "pid": os.getpid(), **fields})


def open_run(out: str | os.PathLike, config: MetaTrainConfig, *, resume: bool) -> RunDirectory:
    """Checks, locks and records a run directory before a run writes to it.

    Args:
        out: the directory.
        config: the config the run will use.
        resume: continue the run in ``out`` (else start a new one; ``out`` must hold no run).

    Returns:
        The locked :class:`RunDirectory`; call :meth:`RunDirectory.release` when the run ends.

    Raises:
        OutputExistsError: a new run into a directory holding a run.
        FileNotFoundError: a resume of a missing directory or of one without ``config.json``.
        ValueError: a resume whose config differs from the saved one in a key outside
            :data:`RESUME_SAFE_KEYS`, or whose ``trainer.outer_steps`` is below the step reached.
        DirectoryInUseError: another live process is running in ``out``.
    """
    out = pathlib.Path(out)
    if resume:
        _require_run(out)
    lock = DirectoryLock(out).acquire()
    try:
        run = RunDirectory(out, lock)
        if not resume:
            clear_for_new_run(out, overwrite=False, config=config)  # refuses a directory that holds a run
            _write_config(out, config)
            _record(out, 0, "start", config=config.to_dict())
            return run
        saved = load_config(str(out))
        run.changes = config_changes(saved, config)
        _check_changes(out, run.changes)
        step = latest_checkpoint_step(out, config)
        if step is not None and config.trainer.outer_steps < step:
            raise ValueError(f"cannot resume {str(out)!r} with trainer.outer_steps={config.trainer.outer_steps}: "
                             f"it has already reached step {step}; give trainer.outer_steps >= {step}.")
        moved = None
        if step is None:
            recorded = existing_outputs(out, LOGS)
            moved = move_aside(out, recorded, prefix="before-restart") if recorded else None
            run.notes.append(f"{out} has no checkpoint yet: starting from step 0"
                             + (f" (the logs of the earlier attempt were moved to {moved})" if moved else "") + ".")
        run.resume_step = step or 0
        if run.changes:
            _write_config(out, config)
        _record(out, run.resume_step, "resume" if step is not None else "restart", changes=run.changes,
                **({"moved_aside": str(moved)} if moved else {}))
        return run
    except BaseException:
        lock.release()
        raise


def check_theta_matches_run(theta_path: str | os.PathLike) -> None:
    """Refuses a run directory's theta file that was not written for the run's ``config.json``.

    A theta written by the trainer records its run's config; it must agree with the
    directory's ``config.json`` outside :data:`RESUME_SAFE_KEYS` (a resumed run that was
    extended keeps its earlier theta until it finishes). A theta without that record (older
    files) must at least be of the architecture and config the run's config names. A file with no
    ``config.json`` next to it is not checked.

    Raises:
        ValueError: names the setting that differs, both values and what to do.
    """
    theta_path = pathlib.Path(theta_path)
    config_path = theta_path.parent / CONFIG_FILE
    if not config_path.is_file():
        return
    run_config = load_config(str(config_path))
    meta = checkpoint.read_metadata(theta_path)
    extra = meta.get("extra") or {}
    fix = (f"it was not written by this run (its theta is from another run, or {CONFIG_FILE} was replaced); "
           f"evaluate a theta that belongs to this config, or re-create it with "
           f"`lopt train --out {theta_path.parent} --resume`.")
    if isinstance(extra.get("run_config"), dict):
        written_for = MetaTrainConfig.from_dict(extra["run_config"])
        for key, (old, new) in config_changes(written_for, run_config).items():
            if key not in RESUME_SAFE_KEYS:
                raise ValueError(f"{str(theta_path)!r} was written for {key}={_show(old)}, but {config_path} "
                                 f"says {key}={_show(new)}: {fix}")
        return
    from lopt import learned

    expected = learned.get(run_config.lopt.name, **run_config.lopt.config)
    if (meta.get("architecture") != expected.name
            or learned.stored_config(expected.name, meta.get("config") or {}) != json.loads(json.dumps(expected.config()))):
        raise ValueError(f"{str(theta_path)!r} holds a `{meta.get('architecture')}` optimizer with config "
                         f"{meta.get('config')}, but {config_path} trains `{expected.name}` with config "
                         f"{expected.config()}: {fix}")


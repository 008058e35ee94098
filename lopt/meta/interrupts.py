"""Stopping meta-training cleanly on Ctrl-C (``SIGINT``) or ``SIGTERM``: finish the step, checkpoint, exit.

:class:`GracefulStop` replaces the handlers of ``SIGINT`` and ``SIGTERM`` while
:meth:`lopt.meta.MetaTrainer.run` trains. The first signal only sets :attr:`GracefulStop.signal`:
the trainer finishes the outer step in flight, writes a checkpoint of it and raises
:class:`TrainingInterrupted`, so an interruption costs nothing but the step in flight. A second
signal of the same kind stops at once (``KeyboardInterrupt``), losing the work since the last
checkpoint. Handlers can only be installed from the main thread; elsewhere (a trainer in a
worker thread) signals keep their previous behaviour, as does a signal the process ignores
(started with ``nohup`` or in the background of a non-interactive shell).

Example:
    >>> import os, signal
    >>> with GracefulStop() as stop:
    ...     os.kill(os.getpid(), signal.SIGTERM)  # the handler only records it
    ...     stop.signal == signal.SIGTERM
    True
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

__all__ = ["GracefulStop", "TrainingInterrupted", "how_to_continue"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def how_to_continue(out_dir: str, *, full_checkpoints: bool = True) -> str:
    """The command that continues a stopped run in ``out_dir``, for messages ("continue with ...").

    With full checkpoints ``--resume`` continues exactly; without (``trainer.full_checkpoints=false``)
    a new run starts from the stopped run's warm start, with fresh inner tasks.

    Example:
        >>> how_to_continue("runs/a")
        '`lopt train --out runs/a --resume`'
        >>> how_to_continue("runs/a", full_checkpoints=False)
        'a new run with `--set trainer.init_from=runs/a/warm_start.safetensors` (fresh inner tasks: this run keeps no full checkpoints, trainer.full_checkpoints=false)'
    """
    if full_checkpoints:
        return f"`lopt train --out {out_dir} --resume`"
    return (f"a new run with `--set trainer.init_from={out_dir}/warm_start.safetensors` "
            "(fresh inner tasks: this run keeps no full checkpoints, trainer.full_checkpoints=false)")


class TrainingInterrupted(KeyboardInterrupt):
    """Meta-training stopped on a signal after checkpointing its last completed outer step.

    A ``KeyboardInterrupt``, so code that handles Ctrl-C (notebooks, ``except KeyboardInterrupt``)
    treats it as one.

    Attributes:
        signum: the signal (``signal.SIGINT`` or ``signal.SIGTERM``).
        step: the outer step the checkpoint holds (the last one completed).
        out_dir: the run directory.
        resumable: whether a full checkpoint holds the step (``--resume`` continues exactly); if
            not (``trainer.full_checkpoints=false``), its warm start does.
    """

    def __init__(self, signum: int, step: int, out_dir: str, *, resumable: bool = True):
        self.signum, self.step, self.out_dir = int(signum), int(step), str(out_dir)
        self.resumable = bool(resumable)
        super().__init__(f"{signal.Signals(signum).name}: meta-training stopped after outer step {step}, "
                         f"which is checkpointed; continue with "
                         f"{how_to_continue(self.out_dir, full_checkpoints=self.resumable)}.")

    @property
    def exit_status(self) -> int:
        """The conventional exit status of a process stopped by this signal: ``128 + signum``."""
        return 128 + self.signum


class GracefulStop:
    """A context manager that turns the first ``SIGINT``/``SIGTERM`` into a request to stop.

    Attributes:
        signal: the first signal received (``None``: none yet).
    """

    def __init__(self, message: str = "finishing the current outer step and saving a checkpoint"):
        self.signal: int | None = None
        self._message = message
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:  # noqa: PYI034 - Python 3.10 has no typing.Self
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # an ignored signal stays ignored (nohup, `&`)
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> None:
        """Puts the previous handlers back (idempotent)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:  # the second signal: stop now
            self.restore()
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\n{signal.Signals(signum).name}: {self._message} (send it again to stop at once, losing the "
              "steps since the last checkpoint) ...", file=sys.stderr, flush=True)

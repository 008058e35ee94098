"""Per-structure normaliser fits kept on disk, so a mixture run's set-up fits each pool once.

:func:`lopt.meta.structure_normalizer.fit_structure` trains every config of a stacked pool with
Adam over a learning-rate grid in one program: on an H200 the 16 structures x 8 configs of the
``taskset`` preset took 56 s of a cold set-up with autotuning off, 101 s with XLA's default
(compiling 16 programs and running them), and the
same configs come back in every run with the same seed (a campaign's sessions, a validation of
one more snapshot, a benchmark). :class:`StructureFitCache` keeps each pool's normalisers in a
small JSON file keyed by everything the numbers depend on:

* the pool's configs (complete, in order) and the fit's settings (steps, grid, seeds);
* the code that computes them (:func:`lopt.source_fingerprint.source_fingerprint` of lopt's task,
  inner-loop, optimizer and fitting sources, and JAX's version);
* the backend (``cpu`` / ``gpu``: their float rounding differs).

A file holds numbers only, with a SHA-256 digest of them that is checked on every read; a file
that does not match (edited, truncated, another request) is refitted with a warning, never
trusted. Files are written atomically (:func:`lopt.checkpoint.atomic_write`).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax

from lopt import checkpoint
from lopt.meta.normalizer import (
    DEFAULT_LEARNING_RATES,
    LossNormalizer,
    default_cache_dir,
    read_matching_document,
)
from lopt.meta.structure_normalizer import fit_structure
from lopt.source_fingerprint import source_fingerprint
from lopt.tasks import Task
from lopt.tasks.config import TaskConfig

__all__ = ["StructureFitCache"]

_FORMAT = "lopt.structure_fits"
_FORMAT_VERSION = 1
#: The sources a fit's numbers depend on (relative to the lopt package folder).
_CODE = ("tasks/**/*.py", "inner/**/*.py", "optimizers/**/*.py", "meta/structure_normalizer.py",
         "meta/normalizer.py")
# What draws configs and estimates their costs decides which configs a pool holds (they are in the
# key, complete), never a given config's numbers: a change there refitted every validation pool
# (~15 CPU minutes per length of lopt.pretrained.validate)
_NOT_CODE = ("tasks/budget.py", "tasks/catalogue.py", "tasks/cost_cache.py", "tasks/cost_workers.py",
             "tasks/mixture.py")


def code_fingerprint() -> str:
    """The fingerprint of the lopt sources a fit's key holds (:data:`_CODE` without :data:`_NOT_CODE`)."""
    return source_fingerprint(*_CODE, exclude=_NOT_CODE)


class StructureFitCache:
    """Fits each stacked pool's normalisers once (:func:`fit_structure`) and keeps them on disk.

    Args:
        directory: where the files live; default :func:`lopt.meta.normalizer.default_cache_dir`
            (``~/.cache/lopt/normalizers``, or ``$LOPT_CACHE_DIR/normalizers``), shared with
            :class:`lopt.meta.NormalizerCache` under other file names.

    Example:
        >>> import tempfile, lopt
        >>> from lopt.meta.structure_fit_cache import StructureFitCache
        >>> cache = StructureFitCache(tempfile.mkdtemp())
        >>> configs = [lopt.tasks.TaskConfig({"family": "quadratic", "dim": 4, "seed": s}) for s in range(2)]
        >>> build = lambda: lopt.tasks.stack([lopt.tasks.build(c) for c in configs])
        >>> fits = cache.fits(configs, build, num_steps=20)  # fits once ...
        >>> cache.lookup(configs, num_steps=20) == fits  # ... then reads the file
        True
    """

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = pathlib.Path(default_cache_dir() if directory is None else directory)

    def __repr__(self) -> str:
        return f"StructureFitCache({str(self.directory)!r})"

    def _identity(self, configs: Sequence[TaskConfig], num_steps: int, learning_rates: Sequence[float],
                  num_seeds: int) -> dict[str, Any]:
        if not configs:
            raise ValueError("StructureFitCache: got no configs; pass the pool's configs, in order.")
        bad = [type(c).__name__ for c in configs if not isinstance(c, TaskConfig)]
        if bad:
            raise TypeError(f"StructureFitCache: configs must be lopt.tasks.TaskConfig (complete configs), got {bad}.")
        return {"format": _FORMAT, "format_version": _FORMAT_VERSION,
                "code": code_fingerprint(),
                "platform": jax.default_backend(), "configs": [c.to_dict() for c in configs],
                "num_steps": int(num_steps), "learning_rates": [float(x) for x in learning_rates],
                "num_seeds": int(num_seeds)}

    def _locate(self, configs: Sequence[TaskConfig], num_steps: int, learning_rates: Sequence[float],
                num_seeds: int) -> tuple[dict[str, Any], pathlib.Path]:
        """The entry's identity and the file named by its hash."""
        identity = self._identity(configs, num_steps, learning_rates, num_seeds)
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()
        return identity, self.directory / f"structure-{configs[0]['family']}-{digest[:20]}.json"

    def path(self, configs: Sequence[TaskConfig], *, num_steps: int,
             learning_rates: Sequence[float] = DEFAULT_LEARNING_RATES, num_seeds: int = 1) -> pathlib.Path:
        """The file that holds (or will hold) these configs' fits with these settings."""
        return self._locate(configs, num_steps, learning_rates, num_seeds)[1]

    def lookup(self, configs: Sequence[TaskConfig], *, num_steps: int,
               learning_rates: Sequence[float] = DEFAULT_LEARNING_RATES,
               num_seeds: int = 1) -> list[LossNormalizer] | None:
        """The cached fits of ``configs`` (one normaliser per config, in order), or ``None``."""
        identity, path = self._locate(configs, num_steps, learning_rates, num_seeds)
        if not path.exists():
            return None
        try:
            return _read(path, identity)
        except (OSError, ValueError, TypeError, KeyError) as err:
            warnings.warn(f"StructureFitCache: ignoring cache file {str(path)!r} ({err}); it will be refitted.",
                          RuntimeWarning, stacklevel=2)
            return None

    def store(self, configs: Sequence[TaskConfig], fits: Sequence[LossNormalizer], *, num_steps: int,
              learning_rates: Sequence[float] = DEFAULT_LEARNING_RATES, num_seeds: int = 1) -> pathlib.Path:
        """Writes ``fits`` (one per config) for later :meth:`lookup`; returns the file."""
        if len(fits) != len(configs):
            raise ValueError(f"StructureFitCache.store: {len(fits)} fits for {len(configs)} configs.")
        identity, path = self._locate(configs, num_steps, learning_rates, num_seeds)
        numbers = [[float(n.initial_loss), float(n.best_loss)] for n in fits]
        document = {**identity, "normalizers": numbers, "digest": _digest(numbers)}
        checkpoint.atomic_write(path, (json.dumps(document, sort_keys=True) + "\n").encode("utf-8"))
        return path

    def fits(self, configs: Sequence[TaskConfig], build_pool: Callable[[], Task], *, num_steps: int,
             learning_rates: Sequence[float] = DEFAULT_LEARNING_RATES, num_seeds: int = 1) -> list[LossNormalizer]:
        """The cached fits, or ``fit_structure(build_pool(), ...)`` stored for next time.

        Args:
            configs: the pool's complete configs, in the order ``build_pool`` stacks them.
            build_pool: builds the stacked pool (called only on a miss).
            num_steps, learning_rates, num_seeds: as in :func:`fit_structure` (its default key).

        Returns:
            One :class:`LossNormalizer` per config.
        """
        settings = {"num_steps": num_steps, "learning_rates": learning_rates, "num_seeds": num_seeds}
        hit = self.lookup(configs, **settings)
        if hit is not None:
            return hit
        fits = fit_structure(build_pool(), **settings)
        self.store(configs, fits, **settings)
        return fits


def _digest(numbers: list) -> str:
    return hashlib.sha256(json.dumps(numbers).encode("utf-8")).hexdigest()


def _read(path: pathlib.Path, identity: dict[str, Any]) -> list[LossNormalizer]:
    document = read_matching_document(path, identity)
    numbers = document["normalizers"]
    if document.get("digest") != _digest(numbers):
        raise ValueError("its digest does not match its numbers")
    if len(numbers) != len(identity["configs"]):
        raise ValueError(f"it holds {len(numbers)} normalisers for {len(identity['configs'])} configs")
    return [LossNormalizer(initial_loss=a, best_loss=b) for a, b in numbers]

"""Task normalisation: map a task's raw loss to a task-independent scale.

TaskSet / Metz et al. 2020: a task's initial loss maps to 1, the lowest loss a tuned baseline
reaches maps to 0 (linearly), and the result is clipped to ``[-clip, clip]`` so no task
dominates an average.

* :func:`normalize_loss` is the one implementation of the map (jit-friendly, broadcasting).
* :class:`LossNormalizer` holds one task's two numbers.
* :func:`fit_normalizer` measures them by training the task with Adam over a learning-rate
  grid and a few seeds, all in one compiled program (:func:`lopt.inner.train_many`).
* :class:`NormalizerCache` computes each normaliser once per (task config, settings, lopt
  version) and keeps it on disk as JSON.
* :func:`normalizer_arrays` stacks many normalisers into arrays that a jitted meta-training
  step indexes by task.

Example:
    >>> import lopt
    >>> from lopt.meta.normalizer import LossNormalizer, normalizer_arrays
    >>> norm = LossNormalizer(initial_loss=2.3, best_loss=0.3)
    >>> round(float(norm(1.3)), 6)
    0.5
    >>> initial, best = normalizer_arrays([norm, LossNormalizer(1.0, 0.0)])
    >>> initial.tolist(), best.dtype
    ([2.299999952316284, 1.0], dtype('float32'))
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
import os
import pathlib
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lopt import checkpoint, inner, optimizers
from lopt import tasks as tasks_lib
from lopt.tasks.config import TaskConfig

__all__ = [
    "DEFAULT_LEARNING_RATES",
    "LossNormalizer",
    "NormalizerCache",
    "default_cache_dir",
    "fit_normalizer",
    "normalize_loss",
    "normalizer_arrays",
]

#: Adam learning rates :func:`fit_normalizer` tries by default: 7 points, log-spaced 1e-4..1e-1.
DEFAULT_LEARNING_RATES: tuple[float, ...] = tuple(float(x) for x in np.logspace(-4, -1, 7))

#: Version of the cache file layout and of the fitting procedure (part of every cache key).
_CACHE_FORMAT = "lopt.normalizer"
_CACHE_FORMAT_VERSION = 1


def normalize_loss(loss: ArrayLike, initial_loss: ArrayLike, best_loss: ArrayLike, *,
                   clip: float = 2.0) -> jax.Array:
    """Linearly maps ``initial_loss -> 1`` and ``best_loss -> 0``, clipped to ``[-clip, clip]``.

    Works on scalars and arrays (broadcasting), inside ``jit``; non-finite losses map to ``clip``.

    Example:
        >>> float(normalize_loss(1.5, initial_loss=2.0, best_loss=1.0))
        0.5
        >>> float(normalize_loss(float("nan"), 2.0, 1.0))
        2.0
    """
    loss = jnp.asarray(loss, jnp.float32)
    scale = jnp.maximum(jnp.asarray(initial_loss, jnp.float32) - best_loss, 1e-12)
    normalized = (loss - best_loss) / scale
    return jnp.where(jnp.isfinite(normalized), jnp.clip(normalized, -clip, clip), clip)


def _finite_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"LossNormalizer: {name}={value!r} must be a number (a Python float).")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"LossNormalizer: {name}={value} must be finite.")
    return value


@dataclasses.dataclass(frozen=True)
class LossNormalizer:
    """One task's normaliser: its initial loss (maps to 1) and best loss (maps to 0).

    Attributes:
        initial_loss: expected training loss at initialisation.
        best_loss: lowest (smoothed) training loss a tuned Adam reached; ``< initial_loss``.

    Example:
        >>> norm = LossNormalizer(initial_loss=4.0, best_loss=2.0)
        >>> [float(norm(x)) for x in (4.0, 2.0, 3.0, 100.0, float("inf"))]
        [1.0, 0.0, 0.5, 2.0, 2.0]
        >>> LossNormalizer.from_dict(norm.to_dict()) == norm
        True
    """

    initial_loss: float
    best_loss: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "initial_loss", _finite_float(self.initial_loss, "initial_loss"))
        object.__setattr__(self, "best_loss", _finite_float(self.best_loss, "best_loss"))
        if not self.best_loss < self.initial_loss:
            raise ValueError(
                f"LossNormalizer: best_loss={self.best_loss} must be below initial_loss="
                f"{self.initial_loss} (the loss must go down for the map to be defined).")

    def __call__(self, loss: ArrayLike, *, clip: float = 2.0) -> jax.Array:
        """Returns :func:`normalize_loss` of ``loss`` with this task's two numbers."""
        return normalize_loss(loss, self.initial_loss, self.best_loss, clip=clip)

    def to_dict(self) -> dict[str, float]:
        """Returns ``{"initial_loss": ..., "best_loss": ...}`` (JSON-serialisable)."""
        return {"initial_loss": self.initial_loss, "best_loss": self.best_loss}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LossNormalizer:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: ``data`` is not a mapping with exactly those two keys.
        """
        if not isinstance(data, Mapping) or set(data) != {"initial_loss", "best_loss"}:
            raise ValueError(f"LossNormalizer.from_dict: expected a mapping with keys 'initial_loss' "
                             f"and 'best_loss', got {data!r}.")
        return cls(initial_loss=data["initial_loss"], best_loss=data["best_loss"])


def normalizer_arrays(normalizers: Sequence[LossNormalizer]) -> tuple[jax.Array, jax.Array]:
    """Stacks normalisers into ``(initial [P], best [P])`` float32 arrays for use inside ``jit``.

    Gather per-task entries by index and pass them to :func:`normalize_loss`.

    Args:
        normalizers: one :class:`LossNormalizer` per task (``P`` of them).

    Returns:
        ``(initial_losses, best_losses)``, each a float32 ``jax.Array`` of shape ``[P]``.

    Raises:
        ValueError: ``normalizers`` is empty. TypeError: an entry is not a LossNormalizer.

    Example:
        >>> import jax.numpy as jnp
        >>> initial, best = normalizer_arrays([LossNormalizer(2.0, 1.0), LossNormalizer(10.0, 0.0)])
        >>> task_index = jnp.array([1, 0])
        >>> normalize_loss(jnp.array([5.0, 1.5]), initial[task_index], best[task_index])
        Array([0.5, 0.5], dtype=float32)
    """
    normalizers = list(normalizers)
    if not normalizers:
        raise ValueError("normalizer_arrays: got no normalizers; pass one LossNormalizer per task.")
    for i, norm in enumerate(normalizers):
        if not isinstance(norm, LossNormalizer):
            raise TypeError(f"normalizer_arrays: entry {i} is a {type(norm).__name__}, not a "
                            "LossNormalizer (see fit_normalizer or NormalizerCache.get).")
    initial = jnp.asarray([n.initial_loss for n in normalizers], jnp.float32)
    best = jnp.asarray([n.best_loss for n in normalizers], jnp.float32)
    return initial, best


# --- fitting ---------------------------------------------------------------------------------


def _complete_config(cfg: Mapping[str, Any]) -> TaskConfig:
    """The full config (defaults filled in), so equal tasks get equal cache keys."""
    if not isinstance(cfg, Mapping) or "family" not in cfg:
        raise ValueError(f"cfg must be a task config with a 'family' key (e.g. "
                         f"lopt.tasks.sample('mlp', 0)), got {cfg!r}.")
    return tasks_lib.get(cfg["family"]).complete(cfg)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"fit_normalizer: {name}={value!r} must be a positive integer.")
    return int(value)


def _key_description(key: Any) -> dict[str, Any]:
    if key is None:
        key = jax.random.key(0)
    if not isinstance(key, jax.Array):
        raise TypeError(f"fit_normalizer: key must be a jax.random key (e.g. jax.random.key(0)) or "
                        f"None, got {type(key).__name__}.")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return {"impl": str(jax.random.key_impl(key)),
                "data": np.asarray(jax.random.key_data(key)).tolist()}
    return {"impl": "raw", "data": np.asarray(key).tolist()}


def _check_settings(*, num_steps: Any, learning_rates: Any, num_seeds: Any, smoothing: Any,
                    key: Any) -> dict[str, Any]:
    """Validates fitting settings and returns them in canonical JSON form (the cache key)."""
    lrs = np.asarray(learning_rates, dtype=np.float64)
    if lrs.ndim != 1 or lrs.size == 0 or not np.all(np.isfinite(lrs)) or not np.all(lrs > 0):
        raise ValueError(f"fit_normalizer: learning_rates={learning_rates!r} must be a non-empty 1-D "
                         "sequence of positive numbers, e.g. numpy.logspace(-4, -1, 7).")
    return {
        "num_steps": _positive_int(num_steps, "num_steps"),
        "learning_rates": [float(x) for x in lrs],
        "num_seeds": _positive_int(num_seeds, "num_seeds"),
        "smoothing": _positive_int(smoothing, "smoothing"),
        "key": _key_description(key),
    }


def _moving_average(curve: np.ndarray, window: int) -> np.ndarray:
    """Means of every ``window`` consecutive entries (``len(curve) - window + 1`` of them)."""
    sums = np.cumsum(np.concatenate([[0.0], curve]))
    return (sums[window:] - sums[:-window]) / window


def fit_normalizer(cfg: Mapping[str, Any], *, num_steps: int = 300,
                   learning_rates: Sequence[float] = DEFAULT_LEARNING_RATES, num_seeds: int = 2,
                   smoothing: int = 20, key: jax.Array | None = None) -> LossNormalizer:
    """Measures a task's normaliser by training it with Adam over a learning-rate grid.

    All ``len(learning_rates) x num_seeds`` runs are one compiled, vmapped program (one
    :func:`lopt.inner.train_many` call with :func:`lopt.optimizers.adam`; tasks of one structure
    share the compiled program). Only training losses are used, since that is what the
    meta-objective normalises:

    * **initial loss**: the mean over seeds of the training loss at step 0, i.e. the loss of the
      freshly initialised params on the first batch. Every learning rate shares the seed's
      params and batch at step 0, so this is an unbiased estimate of the expected initial loss
      from ``num_seeds`` samples. (Averaging over the first few steps would be biased low: the
      large learning rates have already made progress by then.)
    * **best loss**: for each learning rate, average the curves of the seeds that did not
      diverge, smooth with a trailing moving average of ``smoothing`` steps (single-batch
      losses are noisy, and the minimum of a noisy curve is biased low), and take the minimum
      over steps; the best loss is the minimum of that over learning rates. A run that
      diverged (non-finite loss or params at any step) is ignored entirely.

    The horizon matters: the best loss reached in 300 steps is higher than in 10,000. The
    defaults are cheap on a CPU; for meta-training, set ``num_steps`` to the meta-training
    horizon so a normalised loss of 0 means "as good as Adam in the same number of steps".

    Args:
        cfg: the task config (a mapping naming its ``family``; missing keys take defaults).
        num_steps: inner steps per run; should match the meta-training horizon.
        learning_rates: Adam learning rates to try (default 7 points log-spaced in 1e-4..1e-1).
        num_seeds: seeds per learning rate (init and batches; the same seeds for every rate).
        smoothing: width of the moving average applied before taking the minimum (capped at
            ``num_steps``).
        key: PRNG key; ``None`` means ``jax.random.key(0)`` so a normaliser is reproducible.

    Returns:
        The task's :class:`LossNormalizer`.

    Raises:
        ValueError: invalid settings; the initial loss is not finite; every run diverged; or
            no run went below the initial loss (the message says which and what to change).

    Example:
        >>> import lopt
        >>> cfg = {"family": "quadratic", "dim": 4, "init_scale": 0.0}
        >>> norm = fit_normalizer(cfg, num_steps=100, learning_rates=[0.01, 0.1])
        >>> norm.best_loss < 0.05 * norm.initial_loss
        True
    """
    cfg = _complete_config(cfg)
    settings = _check_settings(num_steps=num_steps, learning_rates=learning_rates,
                               num_seeds=num_seeds, smoothing=smoothing, key=key)
    key = jax.random.key(0) if key is None else key
    task = tasks_lib.build(cfg)
    curves = inner.train_many(
        task, optimizers.adam, {"learning_rate": np.asarray(settings["learning_rates"])}, key=key,
        num_seeds=settings["num_seeds"], num_steps=settings["num_steps"],
        eval_every=settings["num_steps"], eval_batches=1)
    train_loss = np.asarray(curves.train_loss, np.float64)  # [G, S, T]
    diverged = np.asarray(curves.diverged)  # [G, S]

    initial = float(np.mean(train_loss[0, :, 0]))
    if not math.isfinite(initial):
        raise ValueError(f"fit_normalizer: the initial training loss of {cfg} is {initial}; the task "
                         "is broken at initialisation (check its init and loss).")
    window = min(settings["smoothing"], settings["num_steps"])
    best = math.inf
    for g in range(train_loss.shape[0]):
        ok = ~diverged[g] & np.all(np.isfinite(train_loss[g]), axis=-1)
        if ok.any():
            best = min(best, float(np.min(_moving_average(train_loss[g, ok].mean(axis=0), window))))
    if not math.isfinite(best):
        raise ValueError(f"fit_normalizer: every run of {cfg} diverged at every learning rate in "
                         f"{settings['learning_rates']}; try smaller learning_rates.")
    if not best < initial:
        raise ValueError(f"fit_normalizer: Adam never brought the smoothed training loss of {cfg} "
                         f"below its initial loss {initial:.6g} (best {best:.6g}) in {num_steps} "
                         "steps; increase num_steps or widen learning_rates.")
    return LossNormalizer(initial_loss=initial, best_loss=best)


_FIT_DEFAULTS = {name: p.default for name, p in inspect.signature(fit_normalizer).parameters.items()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY}


# --- the on-disk cache -----------------------------------------------------------------------


def default_cache_dir() -> pathlib.Path:
    """``$LOPT_CACHE_DIR/normalizers``, else ``$XDG_CACHE_HOME/lopt/normalizers``, else
    ``~/.cache/lopt/normalizers``."""
    if os.environ.get("LOPT_CACHE_DIR"):
        return pathlib.Path(os.environ["LOPT_CACHE_DIR"]) / "normalizers"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "lopt" / "normalizers"


def read_matching_document(path: pathlib.Path, identity: Mapping[str, Any]) -> dict[str, Any]:
    """A cache file's JSON object, checked to hold every field of ``identity`` unchanged.

    Raises:
        OSError, ValueError (bad JSON, or a field that differs), TypeError (not an object): the
        caller ignores the file and recomputes it.
    """
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict):
        raise TypeError("not a JSON object")
    for field, expected in identity.items():
        if document.get(field) != expected:
            raise ValueError(f"its {field!r} does not match the request")
    return document


class NormalizerCache:
    """Computes each task's normaliser once and keeps it on disk as a small JSON file.

    A file is keyed by a SHA-256 hash of the complete task config (defaults filled in), the
    :func:`fit_normalizer` settings (defaults filled in; the key by its raw data) and the lopt
    version, and is named ``<family>-<hash[:20]>.json``. It is written atomically (temporary
    file, then ``os.replace``), so concurrent processes at worst compute the same normaliser
    twice. A file that cannot be read back (bad JSON, wrong content) is recomputed with a
    warning.

    Args:
        directory: where the files live; default :func:`default_cache_dir`.

    Example:
        >>> import tempfile
        >>> cache = NormalizerCache(tempfile.mkdtemp())
        >>> cfg = {"family": "quadratic", "dim": 4}
        >>> norm = cache.get(cfg, num_steps=50)  # trains once ...
        >>> cache.get(cfg, num_steps=50) == norm  # ... then reads the file
        True
    """

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = pathlib.Path(default_cache_dir() if directory is None else directory)

    def __repr__(self) -> str:
        return f"NormalizerCache({str(self.directory)!r})"

    def _entry(self, cfg: Mapping[str, Any], settings: dict[str, Any]) -> tuple[TaskConfig, dict, str]:
        unknown = sorted(set(settings) - set(_FIT_DEFAULTS))
        if unknown:
            raise TypeError(f"NormalizerCache: unknown fit_normalizer settings {unknown}; valid: "
                            f"{sorted(_FIT_DEFAULTS)}.")
        import lopt  # at call time: lopt/__init__ may import this module before setting __version__

        cfg = _complete_config(cfg)
        canonical = _check_settings(**{**_FIT_DEFAULTS, **settings})
        identity = {"format": _CACHE_FORMAT, "format_version": _CACHE_FORMAT_VERSION,
                    "lopt_version": lopt.__version__, "cfg": cfg.to_dict(), "settings": canonical}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()
        return cfg, identity, digest

    def path(self, cfg: Mapping[str, Any], **settings: Any) -> pathlib.Path:
        """The file that holds (or will hold) the normaliser of ``cfg`` with these settings."""
        cfg, _, digest = self._entry(cfg, settings)
        return self.directory / f"{cfg['family']}-{digest[:20]}.json"

    def get(self, cfg: Mapping[str, Any], **settings: Any) -> LossNormalizer:
        """Returns the normaliser of ``cfg``, from disk or computed and saved.

        Args:
            cfg: task config.
            **settings: keyword arguments of :func:`fit_normalizer` (``num_steps``,
                ``learning_rates``, ``num_seeds``, ``smoothing``, ``key``).

        Returns:
            The :class:`LossNormalizer`.

        Raises:
            TypeError: an unknown setting. ValueError: from :func:`fit_normalizer`.
        """
        cfg, identity, digest = self._entry(cfg, settings)
        path = self.directory / f"{cfg['family']}-{digest[:20]}.json"
        if path.exists():
            try:
                return self._read(path, identity)
            except (OSError, ValueError, TypeError, KeyError) as err:
                warnings.warn(f"NormalizerCache: ignoring unreadable cache file {str(path)!r} ({err}); "
                              "recomputing it.", RuntimeWarning, stacklevel=2)
        norm = fit_normalizer(cfg, **settings)
        document = {**identity, "normalizer": norm.to_dict()}
        text = json.dumps(document, indent=1, sort_keys=True) + "\n"
        checkpoint.atomic_write(path, text.encode("utf-8"))
        return norm

    @staticmethod
    def _read(path: pathlib.Path, identity: dict[str, Any]) -> LossNormalizer:
        return LossNormalizer.from_dict(read_matching_document(path, identity).get("normalizer"))

    def get_many(self, cfgs: Iterable[Mapping[str, Any]], *, progress: bool = True,
                 **settings: Any) -> list[LossNormalizer]:
        """:meth:`get` for each config, in order, with a tqdm progress bar.

        Tasks of one structure (same family and shapes) reuse one compiled program, so a list
        sampled from a family costs one compilation per structure plus the training itself.

        Args:
            cfgs: task configs.
            progress: show a progress bar.
            **settings: as in :meth:`get`.

        Returns:
            One :class:`LossNormalizer` per config, in the order given.
        """
        from tqdm.auto import tqdm

        cfgs = list(cfgs)
        return [self.get(cfg, **settings)
                for cfg in tqdm(cfgs, desc="task normalizers", unit="task", disable=not progress)]

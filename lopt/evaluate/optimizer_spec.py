"""What the evaluation runs: an optimizer and the hyperparameter settings to try with it.

An :class:`OptimizerSpec` names a way to build an optax transformation (a lopt baseline, any
``optax`` alias, or a learned optimizer with its ``theta``) and a tuple of hyperparameter
settings. Every setting of a spec, times every seed, trains as *one* compiled, vmapped
program per task (see :mod:`lopt.evaluate.runner`): the settings are traced arguments, and so
is ``theta``, so a new checkpoint of a known architecture does not recompile.

:func:`resolve` turns the names the command line takes into specs: a checkpoint path, a
baseline name (``adam``), a learned architecture (``learnable_adam``, untrained), or an optax
alias (``optax.lion``), optionally with hyperparameters (``adam:learning_rate=3e-3,b1=0.8``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lopt.learned
import lopt.optimizers

__all__ = ["OptimizerFactory", "OptimizerSpec", "hparams_key", "resolve"]

KINDS = ("baseline", "optax", "learned")


@dataclasses.dataclass(frozen=True)
class OptimizerFactory:
    """A hashable recipe ``(hparams, theta, num_steps) -> optax transformation``.

    It is a static argument of the compiled training program: two factories that compare
    equal share one compiled program (given tasks of one structure).

    Attributes:
        kind: ``"baseline"`` (:func:`lopt.optimizers.get`), ``"optax"`` (``getattr(optax, name)``)
            or ``"learned"`` (``architecture.optimizer(theta, num_steps=...)``).
        name: the baseline or optax name, or the learned architecture's name.
        architecture: the learned optimizer (frozen, hashable), for ``kind="learned"``.
    """

    kind: str
    name: str
    architecture: lopt.learned.LearnedOptimizer | None = None

    def __call__(self, hparams: Mapping[str, Any], theta: Any, num_steps: int) -> optax.GradientTransformation:
        """Builds the optimizer; ``hparams`` values may be traced scalars."""
        if self.kind == "learned":
            return self.architecture.optimizer(theta, num_steps=num_steps)
        if self.kind == "baseline":
            extra = {}
            if "total_steps" in lopt.optimizers.defaults(self.name) and "total_steps" not in hparams:
                extra["total_steps"] = num_steps
            return lopt.optimizers.get(self.name, **hparams, **extra)
        return getattr(optax, self.name)(**hparams)


def _canonical_number(value: Any) -> Any:
    """A JSON-stable Python scalar: bools stay bools, numbers become their shortest float32 repr."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating, np.ndarray, jax.Array)) and np.ndim(value) == 0:
        if np.asarray(value).dtype == np.bool_:
            return bool(value)
        return float(np.format_float_scientific(np.float32(value), unique=True))
    raise TypeError(f"hyperparameter value {value!r} must be a scalar number or bool.")


def hparams_key(hparams: Mapping[str, Any]) -> str:
    """The canonical JSON of one setting (sorted keys, float32-rounded numbers): a results key.

    Example:
        >>> hparams_key({"learning_rate": np.float32(1e-3), "b1": 0.9})
        '{"b1": 0.9, "learning_rate": 0.001}'
    """
    return json.dumps({k: _canonical_number(v) for k, v in sorted(hparams.items())}, sort_keys=True)


def _theta_digest(theta: Any) -> str:
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(theta):
        array = np.asarray(leaf, dtype=np.float32)
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


@dataclasses.dataclass(eq=False)
class OptimizerSpec:
    """An optimizer to evaluate: a factory, its hyperparameter settings, and theta if learned.

    Attributes:
        label: the name in results files, tables and legends (unique within an evaluation).
        factory: builds the optax transformation.
        settings: the hyperparameter settings to train (one for a plain candidate, 15 for a
            learning-rate grid, N for a random search); all with the same keys.
        theta: a learned optimizer's meta-parameters (``None`` otherwise).
        role: ``"candidate"`` (reported as itself) or ``"baseline"`` (runs that tuned
            baselines select from; see :mod:`lopt.evaluate.baselines`).
        source: JSON-serialisable provenance (checkpoint path and digest, search seed...).
        num_steps: the spec's own horizon, for a baseline search run longer than the suite's
            (to measure speedups past 1x); ``None``: the suite's horizon.

    Example:
        >>> spec = OptimizerSpec.from_baseline("adam", learning_rate=3e-3)
        >>> spec.label, spec.keys()
        ('adam', ['{"b1": 0.9, "b2": 0.999, "eps": 1e-08, "learning_rate": 0.003}'])
    """

    label: str
    factory: OptimizerFactory
    settings: tuple[dict[str, Any], ...] = ({},)
    theta: Any = None
    role: str = "candidate"
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    num_steps: int | None = None

    def __post_init__(self) -> None:
        if self.num_steps is not None and (isinstance(self.num_steps, bool) or
                                           not isinstance(self.num_steps, (int, np.integer)) or self.num_steps < 1):
            raise ValueError(f"{self.label}: num_steps={self.num_steps!r} must be a positive integer or None.")
        if not isinstance(self.label, str) or not self.label or any(c in self.label for c in "\n\r"):
            raise ValueError(f"optimizer label {self.label!r} must be a non-empty string without newlines.")
        if self.factory.kind not in KINDS:
            raise ValueError(f"factory kind {self.factory.kind!r} is not one of {KINDS}.")
        if self.role not in ("candidate", "baseline"):
            raise ValueError(f"role={self.role!r} must be 'candidate' or 'baseline'.")
        self.settings = tuple({k: _canonical_number(v) for k, v in s.items()} for s in self.settings)
        if not self.settings:
            raise ValueError(f"{self.label}: settings is empty; give at least one setting (e.g. [{{}}]).")
        names = {tuple(sorted(s)) for s in self.settings}
        if len(names) != 1:
            raise ValueError(f"{self.label}: every setting must have the same hyperparameter names, got {names}.")
        if self.factory.kind == "learned" and self.theta is None:
            raise ValueError(f"{self.label}: a learned optimizer needs theta.")
        keys = self.keys()
        if len(set(keys)) != len(keys):
            raise ValueError(f"{self.label}: settings repeat after float32 rounding; give distinct settings.")

    # -- constructors --------------------------------------------------------------------

    @classmethod
    def from_baseline(cls, name: str, *, label: str | None = None, **hparams: Any) -> OptimizerSpec:
        """A lopt baseline (:func:`lopt.optimizers.get`) at its defaults overridden by ``hparams``."""
        values = lopt.optimizers.defaults(name)
        needs_horizon = "total_steps" in values  # filled in with the run's steps when built
        values.pop("total_steps", None)
        values.update(hparams)
        horizon = {"total_steps": 1000} if needs_horizon and "total_steps" not in values else {}
        lopt.optimizers.get(name, **values, **horizon)  # validates names and values now, not mid-run
        return cls(label or name, OptimizerFactory("baseline", name), (values,))

    @classmethod
    def from_optax(cls, name: str, *, label: str | None = None, **hparams: Any) -> OptimizerSpec:
        """Any optax alias by name, e.g. ``from_optax("lion", learning_rate=1e-4)``.

        ``learning_rate`` defaults to ``1e-3`` when the alias requires it.
        """
        fn = getattr(optax, name, None)
        if not callable(fn) or name.startswith("_"):
            raise ValueError(f"optax has no optimizer {name!r}; use an alias such as 'adam', 'lion', 'sgd'.")
        params = inspect.signature(fn).parameters
        if ("learning_rate" in params and params["learning_rate"].default is inspect.Parameter.empty
                and "learning_rate" not in hparams):
            hparams = {"learning_rate": 1e-3, **hparams}
        try:
            optimizer = fn(**hparams)
        except TypeError as err:
            raise TypeError(f"optax.{name}({hparams}) failed: {err}") from None
        if not isinstance(optimizer, optax.GradientTransformation):
            raise ValueError(f"optax.{name} does not build an optimizer (got {type(optimizer).__name__}).")
        return cls(label or f"optax.{name}", OptimizerFactory("optax", name), (dict(hparams),))

    @classmethod
    def from_learned(cls, architecture: lopt.learned.LearnedOptimizer, theta: Any, *, label: str | None = None,
                     source: dict[str, Any] | None = None) -> OptimizerSpec:
        """A learned optimizer with meta-parameters ``theta`` (checked against the architecture)."""
        if not isinstance(architecture, lopt.learned.LearnedOptimizer):
            raise TypeError(f"architecture must be a lopt.learned.LearnedOptimizer, got {type(architecture).__name__}.")
        architecture.check_theta(theta)
        theta = jax.tree.map(jnp.asarray, theta)
        info = {"architecture": architecture.name, "config": architecture.config(),
                "theta_sha256": _theta_digest(theta), **(source or {})}
        return cls(label or architecture.name, OptimizerFactory("learned", architecture.name, architecture),
                   ({},), theta=theta, source=info)

    # -- views ---------------------------------------------------------------------------

    def keys(self) -> list[str]:
        """:func:`hparams_key` of every setting, in order."""
        return [hparams_key(s) for s in self.settings]

    def stacked(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """The chosen settings as ``{name: array [len(indices)]}`` (bools stay bool), for vmap."""
        chosen = [self.settings[i] for i in indices]
        out = {}
        for name in chosen[0]:
            values = [s[name] for s in chosen]
            is_bool = all(isinstance(v, (bool, np.bool_)) for v in values)
            out[name] = np.asarray(values, dtype=np.bool_ if is_bool else np.float32)
        return out

    def describe(self) -> dict[str, Any]:
        """JSON description for the results header (identifies the spec on resume)."""
        info = {"kind": self.factory.kind, "name": self.factory.name, "role": self.role,
                "settings": self.keys(), "source": self.source}
        if self.num_steps is not None:
            info["num_steps"] = int(self.num_steps)
        return info


def _parse_hparams(text: str) -> dict[str, Any]:
    out = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item:
            raise ValueError(f"hyperparameter {item!r} must look like NAME=VALUE, e.g. 'adam:learning_rate=3e-3'.")
        name, value = (s.strip() for s in item.split("=", 1))
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = {"true": True, "false": False}.get(value.lower(), value)
    return out


THETA_FILE = "theta.safetensors"  # what `lopt train` writes into its output directory


def _looks_like_path(text: str) -> bool:
    return os.sep in text or text.endswith(".safetensors") or Path(text).exists()


def _checkpoint_label(path: Path) -> str:
    """The file's stem, or its directory's name for the generic ``theta.safetensors``."""
    return path.parent.resolve().name if path.name == THETA_FILE else path.stem


def resolve(name_or_path: str, *, label: str | None = None) -> OptimizerSpec:
    """Turns a command-line name into a candidate :class:`OptimizerSpec`.

    Accepted forms (``:k=v,...`` adds hyperparameters to the first three):

    * a lopt baseline name (:func:`lopt.optimizers.names`), e.g. ``adam`` (default
      hyperparameters, learning rate 1e-3) or ``nadamw:learning_rate=3e-3``;
    * ``optax.NAME``, any optax alias, e.g. ``optax.lion:learning_rate=1e-4``;
    * a learned architecture (:func:`lopt.learned.names`) at its *initial* theta (seed 0),
      e.g. ``learnable_adam``, labelled ``NAME@init``;
    * the path of a theta checkpoint written by :func:`lopt.learned.save_theta`, or the output
      directory of ``lopt train`` (its ``theta.safetensors``), labelled by the file's stem (by
      the directory's name for ``theta.safetensors``).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: an unknown name (the message lists the valid ones) or a bad hyperparameter.

    Example:
        >>> resolve("adam:learning_rate=0.01").settings[0]["learning_rate"]
        0.01
        >>> resolve("learnable_adam").label
        'learnable_adam@init'
    """
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise TypeError(f"optimizer {name_or_path!r} must be a name or a checkpoint path.")
    text = name_or_path.strip()
    if _looks_like_path(text):
        path = Path(text)
        if path.is_dir():
            path = path / THETA_FILE
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist; give a theta file written by "
                                    "`lopt train` (or its output directory) or lopt.learned.save_theta, or an "
                                    "optimizer name.")
        theta, architecture = lopt.learned.load_theta(path)
        from lopt.meta.run_directory import (
            check_theta_matches_run,  # here: keeps lopt.evaluate importable alone
        )

        check_theta_matches_run(path)  # a `lopt train` directory's theta must belong to its config.json
        source = {"checkpoint": str(path.resolve())}
        return OptimizerSpec.from_learned(architecture, theta, label=label or _checkpoint_label(path), source=source)
    name, _, rest = text.partition(":")
    hparams = _parse_hparams(rest)
    if name in lopt.optimizers.names():
        return OptimizerSpec.from_baseline(name, label=label or text, **hparams)
    if name.startswith("optax."):
        return OptimizerSpec.from_optax(name[len("optax."):], label=label or text, **hparams)
    if name == "pretrained":  # `pretrained` or `pretrained:NAME`: weights shipped in the package
        shipped = rest.strip() or "default"
        theta, architecture = lopt.pretrained.load(shipped)
        return OptimizerSpec.from_learned(architecture, theta, label=label or f"pretrained:{shipped}",
                                          source={"pretrained": shipped, "file": str(lopt.pretrained.path(shipped))})
    if name in lopt.learned.names():
        architecture = lopt.learned.get(name, **hparams)
        theta = architecture.init(jax.random.key(0))
        return OptimizerSpec.from_learned(architecture, theta, label=label or f"{name}@init",
                                          source={"theta": "init(key(0)), untrained"})
    raise ValueError(f"unknown optimizer {name!r}: give a baseline ({', '.join(lopt.optimizers.names())}), "
                     f"'optax.<alias>' (e.g. optax.lion), 'pretrained' (lopt's shipped optimizer), a learned architecture "
                     f"({', '.join(lopt.learned.names())}) or the path of a theta checkpoint.")

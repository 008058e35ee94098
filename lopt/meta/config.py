"""Typed meta-training configs: dataclasses, built-in presets, TOML or JSON files, ``a.b=value`` overrides."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import typing
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["PRESETS", "MetaTrainConfig", "apply_overrides", "load_config"]


@dataclasses.dataclass
class TaskSection:
    """Which tasks the learned optimizer is trained on.

    Attributes:
        family: task family name.
        config: overrides of the family's default config (all configs in the pool share a structure).
        pool_seeds: if non-empty, the pool is these seeds' sampled configs of ``family`` merged with
            ``config`` (only keys that keep one structure should vary: use the family's dynamic
            settings); empty means a pool of the single config.
        fallback_dataset: dataset used when the configured one is not installed (``""``: none).
        mixture: if non-empty, train on a mixture of families instead: ``{family: weight}``, or
            ``{"taskset": 1}`` for the default distribution over every family. Its configs are
            grouped into ``num_buckets`` structures (one compiled program each) of
            ``configs_per_bucket`` configs; outer step ``s`` trains bucket ``s % num_buckets``.
        num_buckets: structures drawn from the mixture.
        configs_per_bucket: configs (differing in dynamic settings) per structure.
        redraw_every: mixture runs re-draw half of every bucket's configs every N outer steps
            (new dynamic variants, same compiled program; 0: never).
        heldout_per_bucket: variants of every training structure held out for validation.
        heldout_families: families used only for held-out validation, never for training.
        heldout_seed: seeds the held-out variants (-1: the run's ``seed``); fix it to validate
            every run of a campaign on the same configs.
        structures: explicit training structures (configs) instead of drawing ``num_buckets``
            from the mixture (a campaign fixes them so every session trains the same programs).
    """

    family: str = "mlp"
    config: dict = dataclasses.field(default_factory=lambda: {
        "dataset": "fashion_mnist", "image_size": 8, "hidden_sizes": [32], "activation": "relu",
        "batch_size": 128})
    pool_seeds: list = dataclasses.field(default_factory=list)
    fallback_dataset: str = "digits"
    mixture: dict = dataclasses.field(default_factory=dict)
    num_buckets: int = 4
    configs_per_bucket: int = 4
    redraw_every: int = 100
    heldout_per_bucket: int = 2
    heldout_families: list = dataclasses.field(default_factory=list)
    heldout_seed: int = -1
    structures: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class LOptSection:
    """The learned optimizer: registry name and config (see ``lopt.learned.get``)."""

    name: str = "mlp"
    config: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class EstimatorSection:
    """The meta-gradient estimator.

    Attributes:
        kind: ``"pes"``, ``"es"`` (truncated ES), ``"tbptt"`` or ``"full_es"``.
        num_tasks: parallel inner trainings (antithetic pairs for ES kinds).
        std: perturbation standard deviation (ES kinds).
        unroll_length: inner steps per truncation.
        objective: ``"train"`` or ``"valid"`` meta-objective.
        episode_weighting: ``"uniform"`` (each inner step of an episode weighs the same) or
            ``"linear"`` (later steps weigh more, toward the final loss; see
            :class:`lopt.meta.MetaProblem`).
        full_es_meta_loss: ``"mean"`` or ``"final"`` (full_es only).
        sign_only: full_es: use only the sign of the loss difference (VeLO).
    """

    kind: str = "pes"
    num_tasks: int = 16
    std: float = 0.01
    unroll_length: int = 50
    objective: str = "train"
    episode_weighting: str = "uniform"
    full_es_meta_loss: str = "mean"
    sign_only: bool = False


@dataclasses.dataclass
class TruncationSection:
    """Horizon schedule: ``constant`` (``horizon``), ``log_uniform`` (min..max) or ``never_ending``."""

    kind: str = "constant"
    horizon: int = 1000
    min_horizon: int = 100
    max_horizon: int = 10_000


@dataclasses.dataclass
class NormalizerSection:
    """Task normalisation (Adam learning-rate grid per task config, cached on disk).

    Attributes:
        enabled: normalise losses; if false, raw losses are used (initial 1, best 0).
        num_steps: Adam steps per normaliser run (``0``: the truncation horizon).
        num_seeds: seeds per learning rate.
        cache_dir: where normalisers are cached (``""``: ``~/.cache/lopt/normalizers``): per config
            for one structure, per structure pool for mixtures
            (:class:`~lopt.meta.structure_fit_cache.StructureFitCache`).
    """

    enabled: bool = True
    num_steps: int = 0
    num_seeds: int = 2
    cache_dir: str = ""


@dataclasses.dataclass
class OuterSection:
    """The outer optimizer (optax): Adam with global-norm gradient clipping by default.

    Attributes:
        optimizer: a baseline name from :mod:`lopt.optimizers` (``"adam"``), or a learned
            optimizer that updates theta (self-training, :mod:`lopt.meta.outer`):
            ``"pretrained"``, ``"pretrained:NAME"`` (a shipped optimizer) or ``"lopt:PATH"``
            (a theta file). A learned one gets the meta-loss as ``loss`` and
            ``trainer.outer_steps`` as its horizon.
        learning_rate: the baseline's learning rate. A learned outer optimizer has none:
            leave this at its default (any other value is a ``ValueError``).
        clip_grad_norm: clip the outer gradient to this global norm first (0: no clipping);
            applies to learned outer optimizers too.
        bucket_weighting: mixture runs: ``"mean"`` averages the structures' meta-gradients,
            ``"unit"`` scales each to unit norm first (every structure an equal vote), ``"pcgrad"``
            then also removes each one's components that conflict with another's.
        trainable: meta-train only theta's leaves whose names match this regular expression
            (e.g. ``"schedule|log_lr"``; names as ``"network/w0"``, :mod:`lopt.meta.trainable`):
            the others are neither perturbed nor updated. ``""``: all of theta.
    """

    optimizer: str = "adam"
    learning_rate: float = 3e-3
    clip_grad_norm: float = 1.0
    bucket_weighting: str = "mean"
    trainable: str = ""


@dataclasses.dataclass
class TrainerSection:
    """Outer loop, evaluation and checkpointing.

    Attributes:
        outer_steps: number of outer steps.
        eval_every: evaluate on held-out tasks every N outer steps (0: never during training).
        eval_tasks: held-out inner trainings per evaluation.
        eval_steps: inner steps per evaluation run (0: the horizon, capped at 2,000).
        checkpoint_every: save every N outer steps.
        checkpoint_minutes: also save when this many minutes passed since the last save.
        keep_checkpoints: checkpoints kept on disk.
        max_minutes: stop (after a checkpoint) once this many minutes of training passed (0: no
            limit); ``--resume`` continues.
        checkpoint_dir: where full checkpoints go (``""``: ``<out>/checkpoints``).
        init_from: warm start: a theta file or a ``warm_start.safetensors`` (theta and outer
            state) to start from, with fresh inner tasks (``""``: a fresh theta).
        theta_history: also write theta at every checkpoint to ``<out>/thetas/theta-NNNNNN.safetensors``
            (a few kB each), for choosing a theta on validation after the run.
        full_checkpoints: save points write the whole training state (theta, outer state and
            every inner task's state, which ``--resume`` continues exactly). ``false``: they
            write only ``warm_start.safetensors`` (and the theta history), a few kB instead of
            up to gigabytes for large mixtures; a stopped run then continues with
            ``trainer.init_from=<out>/warm_start.safetensors`` and fresh inner tasks.
        program_cache: keep a mixture's lowered bucket and normaliser-fit programs on disk as
            ``jax.export`` modules (:class:`~lopt.meta.program_cache.ProgramCache`, next to the
            normalisers in ``normalizer.cache_dir``), so a repeat set-up compiles them without
            tracing them again (one device; needs the ``flatbuffers`` package, else off).
    """

    outer_steps: int = 1000
    eval_every: int = 100
    eval_tasks: int = 4
    eval_steps: int = 0
    checkpoint_every: int = 100
    checkpoint_minutes: float = 5.0
    keep_checkpoints: int = 3
    max_minutes: float = 0.0
    checkpoint_dir: str = ""
    init_from: str = ""
    theta_history: bool = False
    full_checkpoints: bool = True
    program_cache: bool = True


@dataclasses.dataclass
class FinalEvalSection:
    """The evaluation after training: the learned optimizer vs Adam at several learning rates.

    Attributes:
        steps: inner steps per run.
        seeds: fresh tasks (init and data seeds) per optimizer.
        adam_learning_rates: the Adam baselines.
        enabled: run it at all.
    """

    steps: int = 1000
    seeds: int = 4
    adam_learning_rates: list = dataclasses.field(default_factory=lambda: [1e-3, 3e-3, 1e-2, 3e-2])
    enabled: bool = True


@dataclasses.dataclass
class MetaTrainConfig:
    """Everything that defines a meta-training run (saved as ``config.json`` in its output dir).

    Example:
        >>> cfg = load_config("quickstart", ["estimator.num_tasks=8", "trainer.outer_steps=10"])
        >>> cfg.estimator.num_tasks, cfg.trainer.outer_steps
        (8, 10)
    """

    name: str = "quickstart"
    seed: int = 0
    task: TaskSection = dataclasses.field(default_factory=TaskSection)
    lopt: LOptSection = dataclasses.field(default_factory=LOptSection)
    estimator: EstimatorSection = dataclasses.field(default_factory=EstimatorSection)
    truncation: TruncationSection = dataclasses.field(default_factory=TruncationSection)
    normalizer: NormalizerSection = dataclasses.field(default_factory=NormalizerSection)
    outer: OuterSection = dataclasses.field(default_factory=OuterSection)
    trainer: TrainerSection = dataclasses.field(default_factory=TrainerSection)
    final_eval: FinalEvalSection = dataclasses.field(default_factory=FinalEvalSection)

    def to_dict(self) -> dict:
        """A plain, JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MetaTrainConfig:
        """Builds a config from a (possibly partial) nested dict; unknown keys raise ValueError."""
        return _apply(cls(), data, "")


def _apply(obj: Any, data: dict, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix or '<root>'} must be a table/dict, got {data!r}.")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in fields:
            raise ValueError(f"unknown config key {where!r}; valid keys here: {sorted(fields)}.")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, where + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], where))
    return obj


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint) or hint
    if origin is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
    elif origin is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif origin is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif origin is str:
        if isinstance(value, str):
            return value
    elif origin in (dict, list):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if isinstance(value, origin):
            return value
    raise ValueError(f"config key {where!r}: {value!r} is not a valid {getattr(origin, '__name__', origin)}.")


def _quickstart() -> MetaTrainConfig:
    """Meta-trains the ``mlp`` learned optimizer with PES on the small MLP task; minutes on 2 CPU cores."""
    cfg = MetaTrainConfig(name="quickstart")
    cfg.estimator = EstimatorSection(kind="pes", num_tasks=8, std=0.01, unroll_length=50)
    cfg.truncation = TruncationSection(kind="constant", horizon=1000)
    cfg.outer = OuterSection(learning_rate=3e-3, clip_grad_norm=1.0)
    cfg.trainer = TrainerSection(outer_steps=1000, eval_every=250, eval_tasks=4, eval_steps=1000,
                                 checkpoint_every=100, checkpoint_minutes=2.0)
    return cfg


def _canonical() -> MetaTrainConfig:
    """The benchmark config: ``mlp`` lopt, PES, truncation 50, MLP 64-32-10 relu on 8x8 Fashion-MNIST, batch 128."""
    cfg = MetaTrainConfig(name="canonical")
    cfg.estimator = EstimatorSection(kind="pes", num_tasks=16, std=0.01, unroll_length=50)
    cfg.truncation = TruncationSection(kind="constant", horizon=1000)
    cfg.trainer = TrainerSection(outer_steps=2000, eval_every=500, eval_tasks=8, eval_steps=1000)
    return cfg


def _taskset() -> MetaTrainConfig:
    """The pretrained optimizer's recipe: ``nominal`` lopt, PES on every family of the taskset.

    16 structures (shape buckets) in every outer gradient, 8 pairs each, truncation 50,
    log-uniform horizons 100..2,000, half of every bucket re-drawn every 50 outer steps, two
    held-out variants per structure plus the held-out families; every structure's meta-gradient
    is scaled to unit norm before they are averaged. Sized for one GPU.
    """
    cfg = MetaTrainConfig(name="taskset")
    cfg.task = TaskSection(mixture={"taskset": 1}, num_buckets=16, configs_per_bucket=8, redraw_every=50,
                           heldout_per_bucket=2)
    cfg.lopt = LOptSection(name="nominal")
    cfg.estimator = EstimatorSection(kind="pes", num_tasks=8, std=0.01, unroll_length=50)
    cfg.truncation = TruncationSection(kind="log_uniform", min_horizon=100, max_horizon=2000)
    cfg.normalizer = NormalizerSection(num_steps=1000)
    cfg.outer = OuterSection(learning_rate=1e-3, clip_grad_norm=1.0, bucket_weighting="unit")
    cfg.trainer = TrainerSection(outer_steps=100_000, eval_every=200, eval_steps=1000, checkpoint_every=200,
                                 checkpoint_minutes=3.0)
    cfg.final_eval = FinalEvalSection(enabled=False)
    return cfg


PRESETS = {"quickstart": _quickstart, "canonical": _canonical, "taskset": _taskset}


def _read_json_config(path: str) -> MetaTrainConfig:
    """A config saved as JSON (a run's ``config.json``): every key, nothing from a preset."""
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: invalid JSON: {err}") from None
    if not isinstance(data, dict):
        raise TypeError(f"{path}: a config must be a JSON object, got {type(data).__name__}.")
    return MetaTrainConfig.from_dict(data)


def load_config(source: str = "quickstart", overrides: list[str] | tuple[str, ...] = ()) -> MetaTrainConfig:
    """A preset name, a TOML file, a JSON config or a run directory, then ``section.key=value`` overrides.

    Args:
        source: a preset (``"quickstart"``, ``"canonical"``); a path to a ``.toml`` file (its
            tables mirror :class:`MetaTrainConfig`; a top-level ``preset = "..."`` key picks the
            preset it starts from); a ``.json`` file holding a whole config (the ``config.json``
            that ``lopt train`` writes into its output directory); or such an output directory.
        overrides: e.g. ``["estimator.num_tasks=32", "outer.learning_rate=1e-3"]``.

    Raises:
        ValueError: unknown preset, key or badly typed value, or a value a run would refuse
            (:func:`lopt.meta.config_checks.validate_config`: e.g. an empty
            ``final_eval.adam_learning_rates``), naming the key and the fix.
        FileNotFoundError: missing file, or a directory without ``config.json``.

    Example:
        >>> import json, os, tempfile
        >>> run = tempfile.mkdtemp()
        >>> cfg = load_config("quickstart", ["trainer.outer_steps=300"])
        >>> with open(os.path.join(run, "config.json"), "w") as f:
        ...     json.dump(cfg.to_dict(), f)
        >>> load_config(run) == cfg, load_config(os.path.join(run, "config.json")).trainer.outer_steps
        (True, 300)
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"config source must be a preset name or a path, got {source!r}.")
    source = os.fspath(source)
    if source in PRESETS:
        cfg = PRESETS[source]()
    elif os.path.isdir(source):
        path = os.path.join(source, "config.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"directory {source!r} has no config.json, so it is not a `lopt train` "
                                    "output directory; give a preset, a .toml or .json file, or a run directory.")
        cfg = _read_json_config(path)
    elif source.endswith(".json"):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"config file {source!r} does not exist.")
        cfg = _read_json_config(source)
    elif source.endswith(".toml") or os.path.exists(source):
        if not os.path.exists(source):
            raise FileNotFoundError(f"config file {source!r} does not exist.")
        with open(source, "rb") as f:
            try:
                data = tomllib.load(f)
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"{source}: invalid TOML: {err}") from None
        preset = data.pop("preset", "quickstart")
        if preset not in PRESETS:
            raise ValueError(f"{source}: preset={preset!r} is unknown; use one of {sorted(PRESETS)}.")
        cfg = _apply(PRESETS[preset](), data, "")
    else:
        raise ValueError(f"config {source!r} is neither a preset ({', '.join(sorted(PRESETS))}), a .toml or "
                         ".json file, nor a run directory.")
    from lopt.meta.config_checks import validate_config  # lazy: it builds what the config names
    return validate_config(apply_overrides(cfg, overrides))


def apply_overrides(cfg: MetaTrainConfig, overrides: list[str] | tuple[str, ...]) -> MetaTrainConfig:
    """Applies ``section.key=value`` overrides to ``cfg`` in place and returns it.

    Raises:
        ValueError: a malformed override, an unknown key or a badly typed value.

    Example:
        >>> apply_overrides(MetaTrainConfig(), ["seed=4"]).seed
        4
    """
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value, e.g. estimator.num_tasks=32.")
        path, value = item.split("=", 1)
        *sections, key = path.strip().split(".")
        nested: dict = {key: value.strip()}
        for section in reversed(sections):
            nested = {section: nested}
        _apply(cfg, nested, "")
    return cfg

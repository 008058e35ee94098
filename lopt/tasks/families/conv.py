"""Small convolutional image classifiers (TaskSet's ``conv_pooling`` and ``conv_fc`` families).

Both families share a stack of 3x3 convolutions over NHWC images (each layer: convolution with
its own stride and ``"SAME"``/``"VALID"`` padding, optional bias, activation). ``conv_pooling``
then pools the feature map globally (mean or max) and applies one linear layer to the classes;
``conv_fc`` flattens the feature map and applies a small MLP.

Shapes (image size, channels, strides, paddings, hidden widths) are static: they live in the
task's spec. The activation index and ``init_scale`` are dynamic settings, as in
:class:`~lopt.tasks.MLPTask`.
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from lopt.tasks import datasets
from lopt.tasks.classification import (
    BATCH_SIZES,
    IMAGE_DATASETS,
    ClassificationSpec,
    ClassificationTask,
    check_image_config,
    check_int,
    check_int_list,
)
from lopt.tasks.family import TaskFamily
from lopt.tasks.layers import ACTIVATIONS, INITIALIZERS, activate
from lopt.tasks.sampling import choice, log_uniform_int

__all__ = [
    "ConvFCFamily",
    "ConvFCSpec",
    "ConvFCTask",
    "ConvPoolingFamily",
    "ConvPoolingSpec",
    "ConvPoolingTask",
    "ConvSpec",
    "conv2d",
    "conv_feature_shape",
    "conv_output_size",
]

PADDINGS = ("SAME", "VALID")
POOLINGS = ("mean", "max")
#: TaskSet's stride patterns: every layer 2, or alternating 1, 2, ... or 2, 1, ...
STRIDE_PATTERNS = ("all_two", "one_two", "two_one")
MAX_CONV_LAYERS = 8
MAX_FC_LAYERS = 8


def conv2d(x: jax.Array, w: jax.Array, stride: int, padding: str) -> jax.Array:
    """A 2-D convolution as strided slices and one matrix product (NHWC images, HWIO kernel).

    The same function as ``jax.lax.conv_general_dilated(x, w, (stride, stride), padding,
    dimension_numbers=("NHWC", "HWIO", "NHWC"))`` (to float rounding), written so that
    vectorising it over tasks that each have their own kernel (``jax.vmap``, as meta-training
    does) gives a batched matrix product. XLA's rule for a vmapped convolution with batched
    kernels is instead one grouped convolution with a group per task, which ran conv_pooling at
    1.2 TFLOP/s on the H200 while the other families ran at 6-9 (stop 28). The ``k * k`` shifted
    views of the padded image are concatenated along channels (order: kernel row, kernel column,
    channel, the order of ``w.reshape(k * k * c_in, c_out)``); taps that land on padding are zeros.

    Args:
        x: ``[batch, height, width, c_in]`` images.
        w: ``[k, k, c_in, c_out]`` kernel.
        stride: the same stride in both spatial dimensions.
        padding: ``"SAME"`` or ``"VALID"``.

    Returns:
        ``[batch, out_height, out_width, c_out]``, sizes as :func:`conv_output_size`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
        >>> w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))
        >>> ref = jax.lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        >>> out = conv2d(x, w, 2, "SAME")
        >>> out.shape, bool(jnp.allclose(out, ref, atol=1e-5))
        ((2, 4, 4, 4), True)
    """
    k, _, c_in, c_out = w.shape
    pads = jax.lax.padtype_to_pads(x.shape[1:3], (k, k), (stride, stride), padding)
    x = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
    out_h, out_w = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    views = [x[:, i:i + (out_h - 1) * stride + 1:stride, j:j + (out_w - 1) * stride + 1:stride, :]
             for i in range(k) for j in range(k)]
    return jnp.einsum("nhwp,po->nhwo", jnp.concatenate(views, axis=-1), w.reshape(k * k * c_in, c_out))


def conv_output_size(size: int, kernel_size: int, stride: int, padding: str) -> int:
    """Spatial size after one convolution (``0`` when a VALID window no longer fits).

    ``"SAME"`` gives ``ceil(size / stride)``; ``"VALID"`` gives
    ``floor((size - kernel_size) / stride) + 1`` (or 0 if ``size < kernel_size``).

    Example:
        >>> conv_output_size(8, 3, 2, "SAME"), conv_output_size(8, 3, 2, "VALID")
        (4, 3)
    """
    if padding == "SAME":
        return -(-size // stride)
    if padding == "VALID":
        return (size - kernel_size) // stride + 1 if size >= kernel_size else 0
    raise ValueError(f"padding={padding!r} is not supported; use one of {PADDINGS}.")


def conv_feature_shape(image_size: int, channels: Sequence[int], strides: Sequence[int],
                       paddings: Sequence[str], kernel_size: int = 3) -> tuple[int, int, int]:
    """``(height, width, channels)`` of the feature map after the conv stack on a square image.

    Raises:
        ValueError: if some layer shrinks the feature map below 1x1; the message names the
            layer and how to fix it.

    Example:
        >>> conv_feature_shape(16, [8, 16], [2, 2], ["SAME", "VALID"])
        (3, 3, 16)
    """
    size = image_size
    for i, (stride, padding) in enumerate(zip(strides, paddings)):
        out = conv_output_size(size, kernel_size, stride, padding)
        if out < 1:
            raise ValueError(
                f"conv layer {i} (padding={padding!r}, stride={stride}, kernel_size={kernel_size}) gets a "
                f"{size}x{size} input and would shrink it below 1x1 (image_size={image_size}, "
                f"strides={list(strides)}, padding={list(paddings)}); use padding='SAME' for that layer, "
                "a smaller kernel_size, fewer layers or a larger image_size.")
        size = out
    return size, size, int(channels[-1]) if len(channels) else 0


@dataclasses.dataclass(frozen=True)
class ConvSpec(ClassificationSpec):
    """Static structure of the conv stack.

    Attributes:
        channels: output channels of each conv layer.
        strides: stride of each conv layer (same in both spatial dimensions).
        paddings: ``"SAME"`` or ``"VALID"`` for each conv layer.
        kernel_size: square kernel size of every conv layer.
        use_bias: whether conv layers have a bias (linear layers always do).
    """

    channels: tuple[int, ...] = (16, 32)
    strides: tuple[int, ...] = (2, 2)
    paddings: tuple[str, ...] = ("SAME", "SAME")
    kernel_size: int = 3
    use_bias: bool = True

    def feature_shape(self) -> tuple[int, int, int]:
        """``(height, width, channels)`` of the last conv layer's output for one image."""
        height, width, _ = self.input_shape
        if height != width:
            raise ValueError(f"input_shape={self.input_shape}: conv families expect square images.")
        return conv_feature_shape(height, self.channels, self.strides, self.paddings, self.kernel_size)


@dataclasses.dataclass(frozen=True)
class ConvPoolingSpec(ConvSpec):
    """Conv stack, then global ``pooling`` (``"mean"`` or ``"max"``), then a linear layer."""

    pooling: str = "mean"


@dataclasses.dataclass(frozen=True)
class ConvFCSpec(ConvSpec):
    """Conv stack, then flatten and fully connected layers of ``hidden_sizes``, then the classes."""

    hidden_sizes: tuple[int, ...] = ()


# Standard deviation (normal) or half-width (uniform) of each initializer, given fan in and out.
_INIT_SCALES = {
    "he_normal": lambda fan_in, fan_out: math.sqrt(2.0 / fan_in),
    "glorot_normal": lambda fan_in, fan_out: math.sqrt(2.0 / (fan_in + fan_out)),
    "glorot_uniform": lambda fan_in, fan_out: math.sqrt(6.0 / (fan_in + fan_out)),
    "lecun_normal": lambda fan_in, fan_out: math.sqrt(1.0 / fan_in),
}


def _init_weights(key: jax.Array, layers: Sequence[tuple[tuple[int, ...], int, int]], initializer: str,
                  scale: jax.Array | float) -> list[jax.Array]:
    """Weights of ``(shape, fan_in, fan_out)`` layers from ONE random draw, times ``scale``.

    Same distributions as :func:`lopt.tasks.layers.init_weight`, but a single random-number
    kernel instead of one per layer, which makes ``init`` several times cheaper to compile.
    """
    if initializer not in _INIT_SCALES:
        raise ValueError(f"initializer={initializer!r} is not supported; use one of {INITIALIZERS}.")
    sizes = [math.prod(shape) for shape, _, _ in layers]
    if initializer.endswith("_uniform"):
        flat = jax.random.uniform(key, (sum(sizes),), minval=-1.0, maxval=1.0)
    else:
        flat = jax.random.normal(key, (sum(sizes),))
    weights, offset = [], 0
    for (shape, fan_in, fan_out), size in zip(layers, sizes):
        std = _INIT_SCALES[initializer](fan_in, fan_out)
        weights.append(flat[offset:offset + size].reshape(shape) * (scale * std))
        offset += size
    return weights


class _ConvTask(ClassificationTask):
    """Shared conv stack. Settings (dynamic): ``activation`` (index), ``init_scale``.

    Subclasses set ``_dense_name`` (the params key of the dense layers), implement
    ``_dense_sizes`` and :meth:`logits`.
    """

    _dense_name = "dense"

    @abc.abstractmethod
    def _dense_sizes(self) -> list[int]:
        """Widths of the dense layers after the conv stack, input first, classes last."""

    def init(self, key):
        spec = self.spec
        k = spec.kernel_size
        in_channels = [spec.input_shape[-1], *spec.channels[:-1]]
        conv = [((k, k, c_in, c_out), k * k * c_in, k * k * c_out)
                for c_in, c_out in zip(in_channels, spec.channels)]
        sizes = self._dense_sizes()
        dense = [((n_in, n_out), n_in, n_out) for n_in, n_out in itertools.pairwise(sizes)]
        weights = _init_weights(key, conv + dense, spec.initializer, self.settings["init_scale"])
        conv_params = []
        for w in weights[:len(conv)]:
            conv_params.append({"w": w, "b": jnp.zeros(w.shape[-1:])} if spec.use_bias else {"w": w})
        dense_params = [{"w": w, "b": jnp.zeros(w.shape[-1:])} for w in weights[len(conv):]]
        return {"conv": conv_params, self._dense_name: dense_params}

    def features(self, params, x: jax.Array) -> jax.Array:
        """Runs the conv stack: ``[batch, H, W, C]`` images to ``[batch, h, w, channels[-1]]``."""
        h = x
        for layer, stride, padding in zip(params["conv"], self.spec.strides, self.spec.paddings):
            h = conv2d(h, layer["w"], stride, padding)
            if "b" in layer:
                h = h + layer["b"]
            h = activate(h, self.settings["activation"], self.spec.activations)
        return h


class ConvPoolingTask(_ConvTask):
    """Conv stack, global mean/max pooling, linear layer to the classes.

    Params: ``{"conv": [{"w": [k, k, c_in, c_out], "b": [c_out]}, ...], "head": [{"w", "b"}]}``.
    Settings (dynamic): ``activation`` (int index into ``spec.activations``), ``init_scale``.

    Example:
        >>> import jax, lopt
        >>> task = lopt.tasks.build({"family": "conv_pooling", "dataset": "digits", "image_size": 8,
        ...                          "channels": [8, 16], "batch_size": 4})
        >>> params = task.init(jax.random.key(0))
        >>> task.logits(params, task.sample_batch(jax.random.key(1))["x"]).shape
        (4, 10)
    """

    _dense_name = "head"

    def _dense_sizes(self):
        return [self.spec.channels[-1], self.spec.num_classes]

    def logits(self, params, x):
        h = self.features(params, x)
        h = h.mean(axis=(1, 2)) if self.spec.pooling == "mean" else h.max(axis=(1, 2))
        layer = params["head"][0]
        return h @ layer["w"] + layer["b"]


class ConvFCTask(_ConvTask):
    """Conv stack, flatten, fully connected hidden layers, linear layer to the classes.

    Params: ``{"conv": [...], "fc": [{"w": [n_in, n_out], "b": [n_out]}, ...]}``; the activation
    follows every conv and hidden layer. Settings as :class:`ConvPoolingTask`.

    Example:
        >>> import jax, lopt
        >>> task = lopt.tasks.build({"family": "conv_fc", "dataset": "digits", "image_size": 8,
        ...                          "channels": [8], "hidden_sizes": [16], "batch_size": 4})
        >>> task.num_params()  # conv 3*3*1*8+8, fc 4*4*8*16+16, head 16*10+10
        2314
    """

    _dense_name = "fc"

    def _dense_sizes(self):
        return [math.prod(self.spec.feature_shape()), *self.spec.hidden_sizes, self.spec.num_classes]

    def logits(self, params, x):
        h = self.features(params, x)
        h = h.reshape(h.shape[0], -1)
        for i, layer in enumerate(params["fc"]):
            h = h @ layer["w"] + layer["b"]
            if i < len(params["fc"]) - 1:
                h = activate(h, self.settings["activation"], self.spec.activations)
        return h


def _per_layer(family: str, key: str, value: Any, num_layers: int) -> tuple:
    """A per-layer setting given as one value (broadcast) or a list of ``num_layers`` values."""
    if isinstance(value, (list, tuple)):
        if len(value) != num_layers:
            raise ValueError(f"{family}: {key}={list(value)!r} has {len(value)} entries but channels has "
                             f"{num_layers} layers; give one value per layer or a single value for all.")
        return tuple(value)
    return (value,) * num_layers


class _ConvFamily(TaskFamily):
    """Shared config keys, sampling and validation of the conv families."""

    def _conv_defaults(self) -> dict[str, Any]:
        return {"dataset": "fashion_mnist", "image_size": 16, "channels": [16, 32], "strides": 2,
                "padding": "SAME", "kernel_size": 3, "use_bias": True, "activation": "relu",
                "initializer": "he_normal", "batch_size": 128, "init_scale": 1.0}

    def _conv_ranges(self) -> dict[str, str]:
        return {
            "channels": "1-3 layers (uniform); each width log-uniform integer in [8, 64]",
            "strides": f"a TaskSet stride pattern, uniform over {STRIDE_PATTERNS}: all 2, or alternating "
                       "1,2,... or 2,1,...",
            "padding": "per layer uniform over ('SAME', 'VALID'); 'SAME' is forced where 'VALID' would "
                       "shrink that layer's input below 1x1",
            "kernel_size": "3",
            "use_bias": "True or False",
            "activation": f"uniform over {tuple(ACTIVATIONS)}",
            "initializer": f"uniform over {INITIALIZERS}",
            "dataset": f"uniform over {IMAGE_DATASETS}",
            "image_size": "uniform over (8, 16, 28) (digits: 8 or 16)",
            "batch_size": f"uniform over {BATCH_SIZES}",
            "init_scale": "1",
        }

    def _sample_conv(self, rng) -> dict[str, Any]:
        num_layers = int(rng.integers(1, 4))
        pattern = choice(rng, STRIDE_PATTERNS)
        strides = {"all_two": [2] * num_layers,
                   "one_two": [1 + i % 2 for i in range(num_layers)],
                   "two_one": [2 - i % 2 for i in range(num_layers)]}[pattern]
        channels = [log_uniform_int(rng, 8, 64) for _ in range(num_layers)]
        dataset = choice(rng, IMAGE_DATASETS)
        image_size = choice(rng, (8, 16) if dataset == "digits" else (8, 16, 28))
        padding, size = [], image_size
        for stride in strides:
            options = PADDINGS if conv_output_size(size, 3, stride, "VALID") >= 1 else ("SAME",)
            padding.append(choice(rng, options))
            size = conv_output_size(size, 3, stride, padding[-1])
        return {"channels": channels, "strides": strides, "padding": padding, "kernel_size": 3,
                "use_bias": bool(rng.integers(2)),
                "activation": choice(rng, tuple(ACTIVATIONS)),
                "initializer": choice(rng, INITIALIZERS),
                "dataset": dataset, "image_size": image_size,
                "batch_size": choice(rng, BATCH_SIZES)}

    def _conv_structure(self, cfg: Mapping[str, Any]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]]:
        """Validated ``(channels, strides, paddings)`` with per-layer values broadcast."""
        channels = check_int_list(self.name, "channels", cfg["channels"], min_len=1, max_len=MAX_CONV_LAYERS)
        strides = _per_layer(self.name, "strides", cfg["strides"], len(channels))
        for stride in strides:
            check_int(self.name, "strides", stride)
        paddings = _per_layer(self.name, "padding", cfg["padding"], len(channels))
        for padding in paddings:
            if padding not in PADDINGS:
                raise ValueError(f"{self.name}: padding={cfg['padding']!r}; each layer's padding must be one "
                                 f"of {PADDINGS}.")
        return channels, strides, paddings

    def _validate_conv(self, cfg: Mapping[str, Any]) -> None:
        check_image_config(self.name, cfg)
        channels, strides, paddings = self._conv_structure(cfg)
        check_int(self.name, "kernel_size", cfg["kernel_size"])
        if not isinstance(cfg["use_bias"], bool):
            # A bad config value (of any type) is a ValueError naming the key: the family contract.
            raise ValueError(f"{self.name}: use_bias={cfg['use_bias']!r} must be True or False.")  # noqa: TRY004
        try:
            conv_feature_shape(cfg["image_size"], channels, strides, paddings, cfg["kernel_size"])
        except ValueError as err:
            raise ValueError(f"{self.name}: {err}") from None

    def _spec_kwargs(self, cfg: Mapping[str, Any], data: datasets.Dataset) -> dict[str, Any]:
        channels, strides, paddings = self._conv_structure(cfg)
        return {"family": self.name, "batch_size": cfg["batch_size"], "input_shape": data.info.input_shape,
                "num_classes": data.info.num_classes, "activations": (cfg["activation"],),
                "initializer": cfg["initializer"], "channels": channels, "strides": strides,
                "paddings": paddings, "kernel_size": cfg["kernel_size"], "use_bias": cfg["use_bias"]}

    @staticmethod
    def _settings(cfg: Mapping[str, Any]) -> dict[str, jax.Array]:
        return {"activation": jnp.int32(0), "init_scale": jnp.float32(cfg["init_scale"])}


class ConvPoolingFamily(_ConvFamily):
    """Convnets with global pooling: conv stack, mean/max pooling over space, linear to the classes.

    Config keys (defaults): ``dataset`` ("fashion_mnist"), ``image_size`` (16), ``channels``
    ([16, 32]), ``strides`` (2: one int for all layers or a list), ``padding`` ("SAME": one
    value or a list), ``kernel_size`` (3), ``use_bias`` (True), ``pooling`` ("mean"),
    ``activation`` ("relu"), ``initializer`` ("he_normal"), ``batch_size`` (128),
    ``init_scale`` (1.0). See :meth:`sampling_ranges` for what :meth:`sample` draws.

    Example:
        >>> import lopt
        >>> family = lopt.tasks.get("conv_pooling")
        >>> cfg = family.sample(0)
        >>> cfg == family.sample(0) and 1 <= len(cfg["channels"]) <= 3
        True
        >>> family.build({"channels": [8], "padding": "VALID", "image_size": 8}).spec.feature_shape()
        (3, 3, 8)
    """

    name = "conv_pooling"
    description = "Image classification convnet (1-3 conv layers, global mean/max pooling, linear head)."

    def defaults(self):
        return {**self._conv_defaults(), "pooling": "mean"}

    def sampling_ranges(self):
        """What :meth:`sample` draws, key by key (the conv keys, plus ``pooling``).

        Example:
            >>> import lopt
            >>> lopt.tasks.get("conv_pooling").sampling_ranges()["pooling"]
            "uniform over ('mean', 'max')"
        """
        return {**self._conv_ranges(), "pooling": f"uniform over {POOLINGS}"}

    def sample_config(self, rng):
        cfg = self._sample_conv(rng)
        cfg["pooling"] = choice(rng, POOLINGS)
        return cfg

    def validate(self, cfg):
        self._validate_conv(cfg)
        if cfg["pooling"] not in POOLINGS:
            raise ValueError(f"{self.name}: pooling={cfg['pooling']!r}; use one of {POOLINGS}.")

    def make_task(self, cfg):
        data = datasets.load(cfg["dataset"], cfg["image_size"])
        spec = ConvPoolingSpec(**self._spec_kwargs(cfg, data), pooling=cfg["pooling"])
        return ConvPoolingTask(spec, data, self._settings(cfg))


class ConvFCFamily(_ConvFamily):
    """Convnets with a fully connected head: conv stack, flatten, 0-2 hidden layers, the classes.

    Config keys (defaults): the conv keys of :class:`ConvPoolingFamily` (without ``pooling``)
    plus ``hidden_sizes`` ([64]): widths of the fully connected hidden layers (may be empty).
    See :meth:`sampling_ranges` for what :meth:`sample` draws.

    Example:
        >>> import lopt
        >>> family = lopt.tasks.get("conv_fc")
        >>> cfg = family.sample(3)
        >>> len(cfg["hidden_sizes"]) <= 2 and cfg == family.sample(3)
        True
    """

    name = "conv_fc"
    description = "Image classification convnet (1-3 conv layers, flatten, 0-2 hidden fully connected layers)."

    def defaults(self):
        return {**self._conv_defaults(), "hidden_sizes": [64]}

    def sampling_ranges(self):
        """What :meth:`sample` draws, key by key (the conv keys, plus ``hidden_sizes``).

        Example:
            >>> import lopt
            >>> lopt.tasks.get("conv_fc").sampling_ranges()["channels"]
            '1-3 layers (uniform); each width log-uniform integer in [8, 64]'
        """
        return {**self._conv_ranges(),
                "hidden_sizes": "depth uniform in {0, 1, 2}; each width log-uniform integer in [32, 128]"}

    def sample_config(self, rng):
        cfg = self._sample_conv(rng)
        cfg["hidden_sizes"] = [log_uniform_int(rng, 32, 128) for _ in range(int(rng.integers(0, 3)))]
        return cfg

    def validate(self, cfg):
        self._validate_conv(cfg)
        check_int_list(self.name, "hidden_sizes", cfg["hidden_sizes"], max_len=MAX_FC_LAYERS)

    def make_task(self, cfg):
        data = datasets.load(cfg["dataset"], cfg["image_size"])
        spec = ConvFCSpec(**self._spec_kwargs(cfg, data), hidden_sizes=tuple(cfg["hidden_sizes"]))
        return ConvFCTask(spec, data, self._settings(cfg))

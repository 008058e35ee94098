"""Normalising flows on small flattened images: RealNVP (``nvp``) and masked autoregressive flows (``maf``).

Both model the density of dequantised 8-bit images. A batch is
``v = (pixels + u) / 256`` with ``u ~ U[0, 1)`` per pixel (uniform dequantisation, drawn in
``sample_batch``), mapped to the real line by the logit transform of RealNVP,
``y = logit(alpha + (1 - 2 alpha) v)`` with ``alpha = 0.05``, and then through the flow to
``z`` with a standard normal base density. The loss is the negative log-likelihood of the 8-bit
data per dimension, including every Jacobian term:

``nll = -(log N(z; 0, I) + log|det dz/dy| + log|det dy/dv|) / D + log 256``

in nats (``unit="nats"``) or divided by ``log 2`` (``unit="bits"``, the usual bits/dim); the
unit is a dynamic setting. Every flow starts as the identity (the last layer of each
conditioner is zero), so the initial loss is that of the logit transform alone.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from lopt.tasks import datasets
from lopt.tasks.base import Task, TaskSpec
from lopt.tasks.classification import (
    BATCH_SIZES,
    IMAGE_DATASETS,
    check_image_config,
    check_int,
    check_int_list,
)
from lopt.tasks.families.generative import apply_mlp, image_pixels, init_mlp
from lopt.tasks.family import TaskFamily
from lopt.tasks.layers import ACTIVATIONS, INITIALIZERS, activate
from lopt.tasks.sampling import choice, log_uniform_int

__all__ = ["UNITS", "FlowSpec", "MAFFamily", "MAFTask", "NVPFamily", "NVPTask", "made_masks"]

#: Loss units: nats per dimension, or bits per dimension, of the 8-bit data.
UNITS = ("nats", "bits")
#: The logit transform's margin (RealNVP's ``alpha``).
LOGIT_ALPHA = 0.05
#: Bound of the log-scales of the affine transforms (``bound * tanh(raw / bound)``).
LOG_SCALE_BOUND = 3.0


@dataclasses.dataclass(frozen=True)
class FlowSpec(TaskSpec):
    """Static structure of a flow.

    Attributes:
        input_shape: shape of one image ``(H, W, C)``; the flow acts on ``D = H * W * C`` dims.
        num_layers: coupling layers (``nvp``) or MADE blocks (``maf``).
        hidden_sizes: hidden widths of each conditioner network.
        activations: activation of the conditioners (``settings["activation"]`` indexes it).
        initializer: weight initializer name.
    """

    input_shape: tuple[int, ...] = ()
    num_layers: int = 4
    hidden_sizes: tuple[int, ...] = (64,)
    activations: tuple[str, ...] = ("relu",)
    initializer: str = "he_normal"

    @property
    def num_inputs(self) -> int:
        """Dimensions of one flattened image, ``D``."""
        return math.prod(self.input_shape)


def _bounded(raw: jax.Array) -> jax.Array:
    return LOG_SCALE_BOUND * jnp.tanh(raw / LOG_SCALE_BOUND)


class _FlowTask(Task):
    """Dequantisation, logit transform, Gaussian base and the NLL; subclasses define the flow.

    Batches are ``{"x": float32 [batch, D]}``: dequantised images in ``(0, 1)``.
    Settings (dynamic): ``activation`` (index), ``init_scale``, ``unit`` (index into ``UNITS``).
    """

    def init(self, key):
        """One MLP per coupling/MADE layer, last layer zero: the flow starts as the identity."""
        spec = self.spec
        sizes = [spec.num_inputs, *spec.hidden_sizes, 2 * spec.num_inputs]
        keys = jax.random.split(key, spec.num_layers)
        return [init_mlp(k, sizes, spec.initializer, self.settings["init_scale"], zero_last=True) for k in keys]

    @abc.abstractmethod
    def transform(self, params, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Maps ``y`` ``[batch, D]`` to ``(z, log|det dz/dy|)`` with shapes ``[batch, D]``, ``[batch]``."""

    def _act(self, h):
        return activate(h, self.settings["activation"], self.spec.activations)

    def sample_batch(self, key, split="train"):
        pixel_key, noise_key = jax.random.split(key)
        pixels = image_pixels(self.data, pixel_key, split, self.spec.batch_size)
        return {"x": (pixels + jax.random.uniform(noise_key, pixels.shape)) / 256.0}

    def log_likelihood(self, params, x: jax.Array) -> jax.Array:
        """``log p(v)`` per example ``[batch]`` for dequantised images ``v`` in ``(0, 1)``."""
        p = LOGIT_ALPHA + (1.0 - 2.0 * LOGIT_ALPHA) * x
        y = jnp.log(p) - jnp.log1p(-p)
        logit_logdet = jnp.sum(math.log(1.0 - 2.0 * LOGIT_ALPHA) - jnp.log(p) - jnp.log1p(-p), axis=-1)
        z, flow_logdet = self.transform(params, y)
        base = -0.5 * jnp.sum(z**2, axis=-1) - 0.5 * z.shape[-1] * math.log(2 * math.pi)
        return base + flow_logdet + logit_logdet

    def loss(self, params, batch):
        nats = -jnp.mean(self.log_likelihood(params, batch["x"])) / self.spec.num_inputs + math.log(256.0)
        return jnp.where(self.settings["unit"] == 0, nats, nats / math.log(2.0))


@functools.cache
def checkerboard(input_shape: tuple[int, ...]) -> np.ndarray:
    """The flattened checkerboard mask ``(row + column) % 2`` of an ``(H, W, C)`` image (float32)."""
    height, width, channels = input_shape
    board = (np.arange(height)[:, None] + np.arange(width)[None, :]) % 2
    return np.repeat(board[:, :, None], channels, axis=2).reshape(-1).astype(np.float32)


class NVPTask(_FlowTask):
    """RealNVP: affine coupling layers with alternating checkerboard masks.

    Coupling ``l`` keeps the pixels where ``mask_l = 1`` and maps the others to
    ``y * exp(s) + t`` with ``(s, t) = MLP(mask_l * y)`` (``s`` bounded by a scaled tanh);
    ``mask_l`` is the checkerboard for even ``l`` and its complement for odd ``l``.

    Example:
        >>> import jax, lopt
        >>> task = lopt.tasks.build({"family": "nvp", "dataset": "digits", "num_layers": 2,
        ...                          "hidden_sizes": [16], "batch_size": 8})
        >>> params = task.init(jax.random.key(0))
        >>> float(task.loss(params, task.sample_batch(jax.random.key(1)))) > 0
        True
    """

    def transform(self, params, y):
        board = jnp.asarray(checkerboard(self.spec.input_shape))
        logdet = jnp.zeros(y.shape[:-1])
        for index, layer in enumerate(params):
            keep = board if index % 2 == 0 else 1.0 - board
            raw_scale, shift = jnp.split(apply_mlp(layer, y * keep, self._act), 2, axis=-1)
            log_scale = _bounded(raw_scale) * (1.0 - keep)
            y = y * jnp.exp(log_scale) + shift * (1.0 - keep)
            logdet = logdet + log_scale.sum(axis=-1)
        return y, logdet


@functools.cache
def made_masks(num_inputs: int, hidden_sizes: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Connectivity masks of a MADE network with inputs ordered ``1..D`` (Germain et al. 2015).

    Hidden unit ``k`` of a layer gets degree ``k % (D - 1) + 1``; a unit may see units of lower
    or equal degree, and output ``d`` (duplicated for the shift and the log-scale) sees only
    hidden units of degree ``< d``, so output ``d`` depends on inputs ``1..d-1`` only.

    Returns:
        One float32 mask per layer, shaped like its weight (the last is ``[H, 2 D]``).

    Example:
        >>> masks = made_masks(3, (4,))
        >>> [m.shape for m in masks]
        [(3, 4), (4, 6)]
        >>> masks[1][:, 0].tolist()  # output 1 depends on no input
        [0.0, 0.0, 0.0, 0.0]
    """
    inputs = np.arange(1, num_inputs + 1)
    degrees = [inputs] + [np.arange(h) % max(1, num_inputs - 1) + 1 for h in hidden_sizes]
    masks = [(later[None, :] >= earlier[:, None]).astype(np.float32)
             for earlier, later in zip(degrees[:-1], degrees[1:])]
    outputs = np.concatenate([inputs, inputs])
    masks.append((outputs[None, :] > degrees[-1][:, None]).astype(np.float32))
    return tuple(masks)


class MAFTask(_FlowTask):
    """Masked autoregressive flow: MADE blocks with the variable order reversed between them.

    Block ``l`` computes ``(mu, alpha) = MADE_l(y)`` (each output sees only earlier dimensions)
    and maps ``y`` to ``(y - mu) * exp(-alpha)`` (``alpha`` bounded by a scaled tanh), so the
    density is evaluated in one parallel pass.

    Example:
        >>> import jax, lopt
        >>> task = lopt.tasks.build({"family": "maf", "dataset": "digits", "num_layers": 2,
        ...                          "hidden_sizes": [70], "batch_size": 8})
        >>> params = task.init(jax.random.key(0))
        >>> float(task.loss(params, task.sample_batch(jax.random.key(1)))) > 0
        True
    """

    def transform(self, params, y):
        masks = made_masks(self.spec.num_inputs, self.spec.hidden_sizes)
        logdet = jnp.zeros(y.shape[:-1])
        for block in params:
            masked = [{"w": layer["w"] * mask, "b": layer["b"]} for layer, mask in zip(block, masks)]
            shift, raw_log_scale = jnp.split(apply_mlp(masked, y, self._act), 2, axis=-1)
            log_scale = _bounded(raw_log_scale)
            y = ((y - shift) * jnp.exp(-log_scale))[..., ::-1]
            logdet = logdet - log_scale.sum(axis=-1)
        return y, logdet


class _FlowFamily(TaskFamily):
    """Shared config keys, sampling and validation of the flow families."""

    task_type: type[_FlowTask]
    layer_range: tuple[int, int] = (2, 6)
    width_range: tuple[int, int] = (32, 256)

    def defaults(self):
        return {"dataset": "fashion_mnist", "image_size": 8, "num_layers": 4, "hidden_sizes": [64],
                "activation": "relu", "initializer": "he_normal", "batch_size": 128, "init_scale": 1.0,
                "unit": "nats"}

    def sampling_ranges(self):
        low, high = self.layer_range
        return {"num_layers": f"uniform integer in [{low}, {high}]",
                "hidden_sizes": f"depth uniform in {{1, 2}}; each width log-uniform integer in {list(self.width_range)}",
                "activation": f"uniform over {tuple(ACTIVATIONS)}",
                "initializer": f"uniform over {INITIALIZERS}",
                "dataset": f"uniform over {IMAGE_DATASETS}",
                "image_size": "8",
                "batch_size": f"uniform over {BATCH_SIZES}",
                "unit": f"uniform over {UNITS}",
                "init_scale": "1"}

    def sample_config(self, rng):
        low, high = self.layer_range
        return {"num_layers": int(rng.integers(low, high + 1)),
                "hidden_sizes": [log_uniform_int(rng, *self.width_range) for _ in range(int(rng.integers(1, 3)))],
                "activation": choice(rng, tuple(ACTIVATIONS)),
                "initializer": choice(rng, INITIALIZERS),
                "dataset": choice(rng, IMAGE_DATASETS),
                "image_size": 8,
                "batch_size": choice(rng, BATCH_SIZES),
                "unit": choice(rng, UNITS)}

    def validate(self, cfg):
        check_image_config(self.name, cfg)
        check_int(self.name, "num_layers", cfg["num_layers"])
        check_int_list(self.name, "hidden_sizes", cfg["hidden_sizes"], min_len=1, max_len=8)
        if cfg["unit"] not in UNITS:
            raise ValueError(f"{self.name}: unit={cfg['unit']!r}; use one of {UNITS}.")

    def dynamic_keys(self) -> tuple[str, ...]:
        """Config keys that only change dynamic settings (configs differing only here stack)."""
        return ("init_scale", "unit")

    def variation_grid(self, cfg):
        """Values of the dynamic keys that a mixture varies inside one compiled structure."""
        return {"init_scale": (0.5, 0.71, 1.0, 1.41, 2.0), "unit": UNITS}

    def make_task(self, cfg):
        data = datasets.load(cfg["dataset"], cfg["image_size"])
        spec = FlowSpec(family=self.name, batch_size=cfg["batch_size"], input_shape=data.info.input_shape,
                        num_layers=cfg["num_layers"], hidden_sizes=tuple(cfg["hidden_sizes"]),
                        activations=(cfg["activation"],), initializer=cfg["initializer"])
        settings = {"activation": jnp.int32(0), "init_scale": jnp.float32(cfg["init_scale"]),
                    "unit": jnp.int32(UNITS.index(cfg["unit"]))}
        return self.task_type(spec, data, settings)


class NVPFamily(_FlowFamily):
    """RealNVP flows of sampled depth and conditioner widths on 8x8 images.

    Config keys (defaults): ``dataset`` ("fashion_mnist"), ``image_size`` (8), ``num_layers``
    (4 coupling layers), ``hidden_sizes`` ([64]: conditioner widths), ``activation`` ("relu"),
    ``initializer`` ("he_normal"), ``batch_size`` (128), ``init_scale`` (1.0), ``unit``
    ("nats" or "bits"). ``init_scale`` and ``unit`` are dynamic.

    Example:
        >>> import lopt
        >>> family = lopt.tasks.get("nvp")
        >>> cfg = family.sample(0)
        >>> cfg == family.sample(0) and 2 <= cfg["num_layers"] <= 6
        True
    """

    name = "nvp"
    description = "RealNVP flow (affine couplings, checkerboard masks) on dequantised 8x8 images; NLL/dim."
    task_type = NVPTask


class MAFFamily(_FlowFamily):
    """Masked autoregressive flows (MADE blocks) of sampled depth and widths on 8x8 images.

    Config keys and defaults as :class:`NVPFamily` (``num_layers`` counts MADE blocks).

    Example:
        >>> import lopt
        >>> family = lopt.tasks.get("maf")
        >>> 1 <= family.sample(3)["num_layers"] <= 5
        True
    """

    name = "maf"
    description = "Masked autoregressive flow (MADE blocks, reversed orders) on dequantised 8x8 images; NLL/dim."
    task_type = MAFTask
    layer_range = (1, 5)
    width_range = (64, 256)

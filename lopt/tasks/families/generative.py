"""Unsupervised image families: MLP autoencoders (``mlp_ae``) and variational autoencoders (``mlp_vae``).

Both train on the offline image datasets (Fashion-MNIST, scikit-learn digits), flattened and
scaled to pixel intensities in ``[0, 1]``; small images (8x8) by default. As in the
classification families, shapes (image size, widths, latent size, batch size) are static and
live in the spec, while ``init_scale`` (and, for ``mlp_ae``, the reconstruction loss) are
dynamic settings, so autoencoders of one architecture with different losses share a program.

This module also holds the two helpers the unsupervised and flow families share:
:func:`image_pixels` (a batch of raw pixel intensities) and :func:`init_mlp` /
:func:`apply_mlp` (a stack of dense layers as a list of ``{"w", "b"}`` dicts).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from lopt.tasks import datasets
from lopt.tasks.base import Task, TaskSpec
from lopt.tasks.classification import (
    BATCH_SIZES,
    IMAGE_DATASETS,
    check_image_config,
    check_int,
    check_int_list,
)
from lopt.tasks.family import TaskFamily
from lopt.tasks.layers import ACTIVATIONS, INITIALIZERS, activate, init_weight
from lopt.tasks.sampling import choice, log_uniform_int

__all__ = [
    "AE_LOSSES",
    "AutoencoderSpec",
    "MLPAutoencoderFamily",
    "MLPAutoencoderTask",
    "MLPVAEFamily",
    "MLPVAETask",
    "apply_mlp",
    "image_pixels",
    "init_mlp",
]

#: Reconstruction losses of ``mlp_ae``: mean squared error of ``sigmoid(logits)`` against the
#: pixels, or sigmoid cross-entropy of the logits with the pixels as targets (both averaged
#: over pixels and examples).
AE_LOSSES = ("mse", "sigmoid_ce")
#: Image sizes the unsupervised families sample from (any of ``datasets.IMAGE_SIZES`` builds).
SAMPLED_IMAGE_SIZES = (8, 16)


def image_pixels(data: datasets.Dataset, key: jax.Array, split: str, batch_size: int) -> jax.Array:
    """Draws ``batch_size`` images of ``split`` as flat pixel intensities in ``{0, ..., 255}``.

    The datasets store uint8 images and normalise them per batch; this undoes the
    normalisation so unsupervised models see raw intensities (as float32 integers).

    Returns:
        ``float32 [batch_size, H * W * C]``.

    Example:
        >>> import jax
        >>> from lopt.tasks import datasets
        >>> x = image_pixels(datasets.load("digits", 8), jax.random.key(0), "train", 4)
        >>> x.shape, float(x.min()) >= 0, float(x.max()) <= 255
        ((4, 64), True, True)
    """
    x = data.sample(key, split, batch_size)["x"]
    if data.info.x_scale is not None:
        x = (x - data.info.x_shift) / data.info.x_scale
    return jnp.clip(jnp.round(x), 0.0, 255.0).reshape(batch_size, -1)


def init_mlp(key: jax.Array, sizes: Sequence[int], initializer: str, scale: jax.Array | float = 1.0,
             *, zero_last: bool = False) -> list[dict[str, jax.Array]]:
    """Initialises dense layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    Args:
        key: PRNG key.
        sizes: layer widths, input first (at least two entries).
        initializer: a name from :data:`lopt.tasks.layers.INITIALIZERS`.
        scale: multiplies every weight (may be traced: the task's dynamic ``init_scale``).
        zero_last: start the last layer at zero (so a flow starts as the identity).

    Returns:
        ``[{"w": [n_in, n_out], "b": [n_out]}, ...]`` with zero biases.

    Example:
        >>> import jax
        >>> layers = init_mlp(jax.random.key(0), [4, 8, 2], "he_normal")
        >>> [layer["w"].shape for layer in layers]
        [(4, 8), (8, 2)]
    """
    keys = jax.random.split(key, len(sizes) - 1)
    layers = []
    for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
        if zero_last and i == len(sizes) - 2:
            w = jnp.zeros((n_in, n_out))
        else:
            w = init_weight(k, (n_in, n_out), n_in, n_out, initializer, scale)
        layers.append({"w": w, "b": jnp.zeros((n_out,))})
    return layers


def apply_mlp(layers: Sequence[Mapping[str, jax.Array]], h: jax.Array,
              activation: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """Applies dense ``layers`` to ``h`` with ``activation`` between them (none after the last).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> layers = init_mlp(jax.random.key(0), [4, 8, 2], "he_normal")
        >>> apply_mlp(layers, jnp.ones((3, 4)), jax.nn.relu).shape
        (3, 2)
    """
    for i, layer in enumerate(layers):
        h = h @ layer["w"] + layer["b"]
        if i < len(layers) - 1:
            h = activation(h)
    return h


@dataclasses.dataclass(frozen=True)
class AutoencoderSpec(TaskSpec):
    """Static structure of the MLP autoencoders.

    Attributes:
        input_shape: shape of one image ``(H, W, C)``.
        hidden_sizes: encoder widths; the decoder mirrors them.
        latent_size: width of the code (the bottleneck).
        activations: activation the hidden layers use (``settings["activation"]`` indexes it).
        initializer: weight initializer name.
    """

    input_shape: tuple[int, ...] = ()
    hidden_sizes: tuple[int, ...] = (128,)
    latent_size: int = 32
    activations: tuple[str, ...] = ("relu",)
    initializer: str = "he_normal"

    @property
    def num_inputs(self) -> int:
        """Pixels per image, ``H * W * C``."""
        return math.prod(self.input_shape)


class _ImageModelTask(Task):
    """Shared pieces of the unsupervised image tasks: pixel batches and the activation."""

    def _act(self, h: jax.Array) -> jax.Array:
        return activate(h, self.settings["activation"], self.spec.activations)

    def _pixels(self, key: jax.Array, split: str) -> jax.Array:
        """Pixels in ``[0, 1]``, ``[batch, D]``."""
        return image_pixels(self.data, key, split, self.spec.batch_size) / 255.0


class MLPAutoencoderTask(_ImageModelTask):
    """An MLP autoencoder: ``D -> hidden -> latent -> reversed(hidden) -> D`` reconstructing pixels.

    The code is linear (no activation at the bottleneck); the decoder outputs logits. The loss is
    chosen by ``settings["loss"]`` (an index into :data:`AE_LOSSES`, dynamic): mean squared error
    of ``sigmoid(logits)`` or sigmoid cross-entropy, both averaged over pixels and examples.

    Batches are ``{"x": float32 [batch, D]}`` with pixels in ``[0, 1]``.
    Settings (dynamic): ``activation`` (index), ``init_scale``, ``loss`` (index).

    Example:
        >>> import jax, lopt
        >>> task = lopt.tasks.build({"family": "mlp_ae", "dataset": "digits", "hidden_sizes": [16],
        ...                          "latent_size": 4, "batch_size": 8})
        >>> task.num_params()  # 64*16+16 + 16*4+4 + 4*16+16 + 16*64+64
        2276
        >>> params = task.init(jax.random.key(0))
        >>> 0 < float(task.loss(params, task.sample_batch(jax.random.key(1)))) < 1
        True
    """

    def init(self, key):
        spec = self.spec
        enc_key, dec_key = jax.random.split(key)
        scale = self.settings["init_scale"]
        encoder = [spec.num_inputs, *spec.hidden_sizes, spec.latent_size]
        return {"encoder": init_mlp(enc_key, encoder, spec.initializer, scale),
                "decoder": init_mlp(dec_key, encoder[::-1], spec.initializer, scale)}

    def sample_batch(self, key, split="train"):
        return {"x": self._pixels(key, split)}

    def reconstruct_logits(self, params, x: jax.Array) -> jax.Array:
        """Decoder logits ``[batch, D]`` for pixels ``x`` ``[batch, D]``."""
        code = apply_mlp(params["encoder"], x, self._act)
        return apply_mlp(params["decoder"], code, self._act)

    def loss(self, params, batch):
        x = batch["x"]
        logits = self.reconstruct_logits(params, x)
        mse = jnp.mean((jax.nn.sigmoid(logits) - x) ** 2)
        cross_entropy = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, x))
        return jnp.where(self.settings["loss"] == 0, mse, cross_entropy)


class MLPVAETask(_ImageModelTask):
    """A variational autoencoder with MLP encoder and decoder; loss = negative ELBO per pixel.

    The encoder maps pixels to the mean and (softplus) standard deviation of a diagonal Gaussian
    posterior over ``latent_size`` codes; the decoder maps a code to Bernoulli logits over pixels.
    The loss is ``E_q[-log p(x|z)] + KL(q(z|x) || N(0, I))`` in nats, summed over pixels and
    codes, averaged over the batch and divided by the number of pixels (nats per dimension).

    The reparameterisation noise is part of the batch: ``sample_batch`` returns
    ``{"x": [batch, D], "eps": [batch, latent_size]}`` with ``eps ~ N(0, I)`` drawn from the
    batch key, so the loss is a pure function of ``(params, batch)`` (one noise sample per
    example, fresh every step; under ``vmap`` every task gets its own).

    Settings (dynamic): ``activation`` (index), ``init_scale``.

    Example:
        >>> import jax, lopt
        >>> task = lopt.tasks.build({"family": "mlp_vae", "dataset": "digits", "hidden_sizes": [16],
        ...                          "latent_size": 4, "batch_size": 8})
        >>> batch = task.sample_batch(jax.random.key(1))
        >>> batch["eps"].shape
        (8, 4)
        >>> float(task.loss(task.init(jax.random.key(0)), batch)) > 0
        True
    """

    def init(self, key):
        spec = self.spec
        enc_key, dec_key = jax.random.split(key)
        scale = self.settings["init_scale"]
        return {"encoder": init_mlp(enc_key, [spec.num_inputs, *spec.hidden_sizes, 2 * spec.latent_size],
                                    spec.initializer, scale),
                "decoder": init_mlp(dec_key, [spec.latent_size, *spec.hidden_sizes[::-1], spec.num_inputs],
                                    spec.initializer, scale)}

    def sample_batch(self, key, split="train"):
        pixel_key, noise_key = jax.random.split(key)
        eps = jax.random.normal(noise_key, (self.spec.batch_size, self.spec.latent_size))
        return {"x": self._pixels(pixel_key, split), "eps": eps}

    def loss(self, params, batch):
        x = batch["x"]
        stats = apply_mlp(params["encoder"], x, self._act)
        mean, raw_std = jnp.split(stats, 2, axis=-1)
        std = jax.nn.softplus(raw_std) + 1e-4
        z = mean + std * batch["eps"]
        logits = apply_mlp(params["decoder"], z, self._act)
        reconstruction = optax.sigmoid_binary_cross_entropy(logits, x).sum(axis=-1)
        kl = 0.5 * jnp.sum(mean**2 + std**2 - 1.0 - 2.0 * jnp.log(std), axis=-1)
        return jnp.mean(reconstruction + kl) / self.spec.num_inputs


class _AutoencoderFamily(TaskFamily):
    """Shared config keys, sampling, validation and structure of ``mlp_ae`` and ``mlp_vae``."""

    def defaults(self):
        return {"dataset": "fashion_mnist", "image_size": 8, "hidden_sizes": [64], "latent_size": 16,
                "activation": "relu", "initializer": "he_normal", "batch_size": 128, "init_scale": 1.0}

    def sampling_ranges(self):
        return {"hidden_sizes": "depth uniform in {1, 2, 3}; each width log-uniform integer in [32, 256]",
                "latent_size": "log-uniform integer in [4, 64]",
                "activation": f"uniform over {tuple(ACTIVATIONS)}",
                "initializer": f"uniform over {INITIALIZERS}",
                "dataset": f"uniform over {IMAGE_DATASETS}",
                "image_size": f"uniform over {SAMPLED_IMAGE_SIZES}",
                "batch_size": f"uniform over {BATCH_SIZES}",
                "init_scale": "1"}

    def sample_config(self, rng):
        return {"hidden_sizes": [log_uniform_int(rng, 32, 256) for _ in range(int(rng.integers(1, 4)))],
                "latent_size": log_uniform_int(rng, 4, 64),
                "activation": choice(rng, tuple(ACTIVATIONS)),
                "initializer": choice(rng, INITIALIZERS),
                "dataset": choice(rng, IMAGE_DATASETS),
                "image_size": choice(rng, SAMPLED_IMAGE_SIZES),
                "batch_size": choice(rng, BATCH_SIZES)}

    def validate(self, cfg):
        check_image_config(self.name, cfg)
        check_int_list(self.name, "hidden_sizes", cfg["hidden_sizes"], min_len=1, max_len=8)
        check_int(self.name, "latent_size", cfg["latent_size"])

    def dynamic_keys(self) -> tuple[str, ...]:
        """Config keys that only change dynamic settings (configs differing only here stack)."""
        return ("init_scale",)

    def variation_grid(self, cfg: Mapping[str, Any]) -> dict[str, tuple]:
        """Values of the dynamic keys that a mixture varies inside one compiled structure."""
        return {"init_scale": (0.5, 0.71, 1.0, 1.41, 2.0)}

    def _spec_and_data(self, cfg):
        data = datasets.load(cfg["dataset"], cfg["image_size"])
        spec = AutoencoderSpec(family=self.name, batch_size=cfg["batch_size"], input_shape=data.info.input_shape,
                               hidden_sizes=tuple(cfg["hidden_sizes"]), latent_size=cfg["latent_size"],
                               activations=(cfg["activation"],), initializer=cfg["initializer"])
        return spec, data

    def _settings(self, cfg) -> dict[str, jax.Array]:
        return {"activation": jnp.int32(0), "init_scale": jnp.float32(cfg["init_scale"])}


class MLPAutoencoderFamily(_AutoencoderFamily):
    """MLP autoencoders of sampled depth, widths, code size, activation, loss, data and batch size.

    Config keys (defaults): ``dataset`` ("fashion_mnist"), ``image_size`` (8), ``hidden_sizes``
    ([64]: encoder widths, mirrored by the decoder), ``latent_size`` (16), ``loss`` ("mse" or
    "sigmoid_ce"), ``activation`` ("relu"), ``initializer`` ("he_normal"), ``batch_size`` (128),
    ``init_scale`` (1.0). ``loss`` and ``init_scale`` are dynamic.

    Example:
        >>> import lopt
        >>> family = lopt.tasks.get("mlp_ae")
        >>> cfg = family.sample(0)
        >>> cfg == family.sample(0) and cfg["loss"] in AE_LOSSES
        True
    """

    name = "mlp_ae"
    description = "Image autoencoder MLP (MSE or sigmoid cross-entropy reconstruction), 8x8/16x16 images."

    def defaults(self):
        return {**super().defaults(), "loss": "mse"}

    def sampling_ranges(self):
        return {**super().sampling_ranges(), "loss": f"uniform over {AE_LOSSES}"}

    def sample_config(self, rng):
        return {**super().sample_config(rng), "loss": choice(rng, AE_LOSSES)}

    def validate(self, cfg):
        super().validate(cfg)
        if cfg["loss"] not in AE_LOSSES:
            raise ValueError(f"{self.name}: loss={cfg['loss']!r}; use one of {AE_LOSSES}.")

    def dynamic_keys(self):
        return ("init_scale", "loss")

    def variation_grid(self, cfg):
        return {**super().variation_grid(cfg), "loss": AE_LOSSES}

    def make_task(self, cfg):
        spec, data = self._spec_and_data(cfg)
        settings = {**self._settings(cfg), "loss": jnp.int32(AE_LOSSES.index(cfg["loss"]))}
        return MLPAutoencoderTask(spec, data, settings)


class MLPVAEFamily(_AutoencoderFamily):
    """Variational autoencoders (Bernoulli decoder, diagonal Gaussian posterior) on small images.

    Config keys (defaults): as ``mlp_ae`` without ``loss``: ``dataset`` ("fashion_mnist"),
    ``image_size`` (8), ``hidden_sizes`` ([64]), ``latent_size`` (16), ``activation`` ("relu"),
    ``initializer`` ("he_normal"), ``batch_size`` (128), ``init_scale`` (1.0).

    Example:
        >>> import lopt
        >>> lopt.tasks.get("mlp_vae").default_config()["latent_size"]
        16
    """

    name = "mlp_vae"
    description = "Image VAE with MLP encoder/decoder (negative ELBO, nats per pixel), 8x8/16x16 images."

    def make_task(self, cfg):
        spec, data = self._spec_and_data(cfg)
        return MLPVAETask(spec, data, self._settings(cfg))

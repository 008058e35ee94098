"""Image preprocessing shared by the image datasets: resizing and fixed splits."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["IMAGE_SIZES", "check_image_size", "resize_uint8", "split_train_valid"]

IMAGE_SIZES = (8, 16, 28)


def check_image_size(image_size: int) -> int:
    """Returns ``image_size`` if supported, else raises a ValueError listing the choices."""
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size={image_size!r} is not supported; use one of {IMAGE_SIZES}.")
    return int(image_size)


def resize_uint8(images: np.ndarray, size: int, *, chunk: int = 8192) -> np.ndarray:
    """Resizes ``[N, H, W]`` or ``[N, H, W, C]`` uint8 images to ``size x size`` (antialiased).

    Returns:
        uint8 array ``[N, size, size, C]``.
    """
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    if (h, w) == (size, size):
        return images
    # Every chunk is padded to one of few shapes (the chunk, or a power of two below it), so the
    # splits of all datasets of one image size share a handful of compiled programs.
    rows = chunk if n > chunk else max(64, 1 << (n - 1).bit_length())
    parts = []
    for i in range(0, n, rows):
        batch = images[i : i + rows]
        padding = np.zeros((rows - len(batch), h, w, c), batch.dtype)
        parts.append(np.asarray(_resize_batch(np.concatenate([batch, padding]), size))[: len(batch)])
    return np.concatenate(parts)


@functools.partial(jax.jit, static_argnames="size")
def _resize_batch(batch: jax.Array, size: int) -> jax.Array:
    n, _, _, c = batch.shape
    out = jax.image.resize(batch.astype(jnp.float32), (n, size, size, c), "linear", antialias=True)
    return jnp.clip(jnp.round(out), 0, 255).astype(jnp.uint8)


def split_train_valid(x: np.ndarray, y: np.ndarray, num_valid: int):
    """Splits the last ``num_valid`` examples off as the validation split (fixed, no shuffle)."""
    if not 0 < num_valid < len(x):
        raise ValueError(f"num_valid={num_valid} must be between 1 and {len(x) - 1}.")
    return (x[:-num_valid], y[:-num_valid]), (x[-num_valid:], y[-num_valid:])

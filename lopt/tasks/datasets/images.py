"""Image preprocessing shared by the image datasets: resizing and fixed splits."""

from __future__ import annotations

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

    @jax.jit
    def resize(batch):
        out = jax.image.resize(batch.astype(jnp.float32), (batch.shape[0], size, size, c), "linear", antialias=True)
        return jnp.clip(jnp.round(out), 0, 255).astype(jnp.uint8)

    parts = [np.asarray(resize(images[i : i + chunk])) for i in range(0, n, chunk)]
    return np.concatenate(parts)


def split_train_valid(x: np.ndarray, y: np.ndarray, num_valid: int):
    """Splits the last ``num_valid`` examples off as the validation split (fixed, no shuffle)."""
    if not 0 < num_valid < len(x):
        raise ValueError(f"num_valid={num_valid} must be between 1 and {len(x) - 1}.")
    return (x[:-num_valid], y[:-num_valid]), (x[-num_valid:], y[-num_valid:])

"""In-memory datasets as pytrees of device arrays, sampled inside jit."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt.host_transfer import to_device
from lopt.tasks.base import SPLITS, check_split

__all__ = ["Dataset", "DatasetInfo"]


def _mean_std(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of all entries; uint8 arrays through a 256-bin histogram (no
    float64 copy: 376 MB for Fashion-MNIST's training images, in every process that loads them).

    Example:
        >>> _mean_std(np.array([[0, 2], [4, 6]], np.uint8))
        (3.0, 2.23606797749979)
    """
    if x.dtype == np.uint8:
        counts = np.bincount(x.ravel(), minlength=256).astype(np.float64)
        values = np.arange(256, dtype=np.float64)
        mean = float(counts @ values / counts.sum())
        return mean, float(np.sqrt(counts @ np.square(values - mean) / counts.sum()))
    x = x.astype(np.float64)
    return float(x.mean()), float(x.std())


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset.

    Attributes:
        name: registry name (e.g. ``"fashion_mnist"``).
        input_shape: shape of one example's ``x`` (e.g. ``(8, 8, 1)``).
        num_classes: number of labels (``0`` when there are none).
        x_scale, x_shift: stored ``x`` (uint8) maps to ``x * x_scale + x_shift`` (float32);
            ``None`` keeps ``x`` as stored (e.g. integer tokens).
        sizes: examples per split, as ``(("train", n), ("valid", n), ("test", n))``.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    x_scale: float | None
    x_shift: float | None
    sizes: tuple[tuple[str, int], ...]

    def size(self, split: str) -> int:
        """Number of examples in ``split``."""
        return dict(self.sizes)[check_split(split)]


class Dataset:
    """Arrays of the three splits, held on device and passed into jitted code as leaves.

    Batches are drawn with replacement by :meth:`sample`, which works under ``jit``, ``vmap``
    and ``lax.scan``: nothing goes back to Python per batch.

    Example:
        >>> import jax
        >>> from lopt.tasks import datasets
        >>> ds = datasets.load("synthetic", image_size=8)
        >>> batch = ds.sample(jax.random.key(0), "train", 32)
        >>> batch["x"].shape, batch["y"].shape
        ((32, 8, 8, 1), (32,))
    """

    def __init__(self, info: DatasetInfo, splits: dict[str, dict[str, Any]]):
        self.info = info
        self.splits = splits

    @classmethod
    def from_numpy(
        cls,
        name: str,
        splits: dict[str, tuple[np.ndarray, np.ndarray]],
        *,
        num_classes: int,
        normalize: bool = True,
    ) -> Dataset:
        """Builds a dataset from ``{split: (x, y)}`` numpy arrays.

        Args:
            name: the dataset's name.
            splits: ``x`` arrays (uint8 images ``[N, H, W, C]`` or integer tokens) and integer
                labels ``y`` for each of ``"train"``, ``"valid"``, ``"test"``.
            num_classes: number of labels.
            normalize: map uint8 ``x`` to zero mean, unit variance using training-split
                statistics (the stored arrays stay uint8; conversion happens per batch).

        Raises:
            ValueError: if a split is missing or ``x`` and ``y`` lengths differ.
        """
        missing = [s for s in SPLITS if s not in splits]
        if missing:
            raise ValueError(f"Dataset {name!r}: splits {missing} are missing; give all of {SPLITS}.")
        arrays = {}
        for split in SPLITS:
            x, y = splits[split]
            if len(x) != len(y):
                raise ValueError(f"Dataset {name!r}: split {split!r} has {len(x)} inputs but {len(y)} labels.")
            if len(x) == 0:
                raise ValueError(f"Dataset {name!r}: split {split!r} is empty.")
            arrays[split] = {"x": to_device(x), "y": to_device(y, np.int32)}
        scale = shift = None
        if normalize:
            mean, std = _mean_std(np.asarray(splits["train"][0]))
            std = std or 1.0
            scale, shift = 1.0 / std, -mean / std
        info = DatasetInfo(
            name=name,
            input_shape=tuple(int(d) for d in np.shape(splits["train"][0])[1:]),
            num_classes=int(num_classes),
            x_scale=scale,
            x_shift=shift,
            sizes=tuple((s, len(splits[s][1])) for s in SPLITS),
        )
        return cls(info, arrays)

    def sample(self, key: jax.Array, split: str, batch_size: int) -> dict[str, jax.Array]:
        """Draws ``batch_size`` examples of ``split`` uniformly with replacement.

        Returns:
            ``{"x": float32 [batch_size, *input_shape], "y": int32 [batch_size]}``.
        """
        arrays = self.splits[check_split(split)]
        index = jax.random.randint(key, (batch_size,), 0, self.info.size(split))
        x = arrays["x"][index]
        if self.info.x_scale is not None:
            x = x.astype(jnp.float32) * self.info.x_scale + self.info.x_shift
        return {"x": x, "y": arrays["y"][index]}

    def __repr__(self) -> str:
        return f"Dataset({self.info.name!r}, input_shape={self.info.input_shape}, sizes={dict(self.info.sizes)})"


jax.tree_util.register_pytree_with_keys(
    Dataset,
    lambda d: (((jax.tree_util.GetAttrKey("splits"), d.splits),), d.info),
    lambda info, children: Dataset(info, *children),
    flatten_func=lambda d: ((d.splits,), d.info),
)

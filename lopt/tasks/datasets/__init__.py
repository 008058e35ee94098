"""Offline datasets: Fashion-MNIST (Debian package), IDX directories, scikit-learn digits, synthetic."""

from lopt.tasks.datasets.catalog import (
    DatasetNotFoundError,
    available,
    load,
    names,
    register_idx_directory,
)
from lopt.tasks.datasets.dataset import Dataset, DatasetInfo
from lopt.tasks.datasets.idx import read_idx
from lopt.tasks.datasets.images import IMAGE_SIZES

__all__ = [
    "IMAGE_SIZES",
    "Dataset",
    "DatasetInfo",
    "DatasetNotFoundError",
    "available",
    "load",
    "names",
    "read_idx",
    "register_idx_directory",
]

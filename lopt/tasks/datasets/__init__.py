"""Offline datasets: Fashion-MNIST (Debian package), IDX directories, scikit-learn digits, synthetic;
text corpora (fortunes, WordNet glosses, plain-text files) as token datasets."""

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
from lopt.tasks.datasets.text import (
    TextCorpus,
    Vocabulary,
    load_corpus,
    load_text,
    register_text,
    text_corpora,
    vocabulary,
)

__all__ = [
    "IMAGE_SIZES",
    "Dataset",
    "DatasetInfo",
    "DatasetNotFoundError",
    "TextCorpus",
    "Vocabulary",
    "available",
    "load",
    "load_corpus",
    "load_text",
    "names",
    "read_idx",
    "register_idx_directory",
    "register_text",
    "text_corpora",
    "vocabulary",
]

"""lopt: learned optimizers in JAX."""

from lopt import tasks

__version__ = "0.1.0"

__all__ = ["__version__", "tasks"]

"""lopt: learned optimizers in JAX."""

from lopt import evaluate, inner, learned, meta, optimizers, plotting, tasks

__version__ = "0.1.0"

__all__ = ["__version__", "evaluate", "inner", "learned", "meta", "optimizers", "plotting", "tasks"]

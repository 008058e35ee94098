"""lopt: learned optimizers in JAX."""

from lopt import analysis, evaluate, inner, learned, meta, optimizers, plotting, pretrained, tasks

__version__ = "0.1.0"

__all__ = ["__version__", "analysis", "evaluate", "inner", "learned", "meta", "optimizers", "plotting", "pretrained",
           "tasks"]

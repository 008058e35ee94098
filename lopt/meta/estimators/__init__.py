"""Meta-gradient estimators: ``init(theta, *, key)`` / ``estimate(theta, state, *, key)``."""

from lopt.meta.estimators.base import Averaged, Estimator, es_gradient, finite_or_zero
from lopt.meta.estimators.full_horizon import FullHorizonES
from lopt.meta.estimators.truncated import PES, PESState, TruncatedBackprop, TruncatedES

ESTIMATORS = {"tbptt": TruncatedBackprop, "es": TruncatedES, "pes": PES, "full_es": FullHorizonES}

__all__ = ["ESTIMATORS", "PES", "Averaged", "Estimator", "FullHorizonES", "PESState", "TruncatedBackprop",
           "TruncatedES", "es_gradient", "finite_or_zero"]

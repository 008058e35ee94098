"""Probes that explain what a learned optimizer does (and check themselves on hand-designed ones).

Each probe takes a recorded training run (:func:`record_trace`) of a :class:`Subject` -- any optax
transformation, a lopt learned optimizer with its theta, a theta file, or a name -- and returns
plain arrays in a dataclass with a ``plot(path)`` method. See ``docs/analysis.md``.

Example:
    >>> import jax, optax, lopt
    >>> from lopt import analysis
    >>> task = lopt.tasks.build({"family": "quadratic", "dim": 4})
    >>> trace = analysis.record_trace(analysis.as_subject(optax.sgd(0.1, momentum=0.9)), task,
    ...                               key=jax.random.key(0), num_steps=50, num_snapshots=5)
    >>> round(float(analysis.momentum_timescales(trace).dominant()[0]), 2)
    10.0
"""

from lopt.analysis import findings
from lopt.analysis.adaptation import Adaptation, learning_rate_adaptation
from lopt.analysis.card import CARD_TASK, write_card
from lopt.analysis.chaotic_task import DoubleWellTask
from lopt.analysis.clipping import Clipping, clipping
from lopt.analysis.implicit_regularization import ImplicitRegularization, implicit_regularization
from lopt.analysis.layout import StateLayout, leaf_names
from lopt.analysis.meta_gradients import MetaGradientDiagnostics, meta_gradient_diagnostics
from lopt.analysis.rest_drift import RestDrift, rest_drift
from lopt.analysis.schedule import Schedule, learning_rate_schedule
from lopt.analysis.subject import Subject, as_subject
from lopt.analysis.timescales import Timescales, momentum_timescales, timescale
from lopt.analysis.trace import Snapshot, Trace, record_trace
from lopt.analysis.update_function import UpdateFunction, update_function

__all__ = [
    "CARD_TASK",
    "Adaptation",
    "Clipping",
    "DoubleWellTask",
    "ImplicitRegularization",
    "MetaGradientDiagnostics",
    "RestDrift",
    "Schedule",
    "Snapshot",
    "StateLayout",
    "Subject",
    "Timescales",
    "Trace",
    "UpdateFunction",
    "as_subject",
    "clipping",
    "findings",
    "implicit_regularization",
    "leaf_names",
    "learning_rate_adaptation",
    "learning_rate_schedule",
    "meta_gradient_diagnostics",
    "momentum_timescales",
    "record_trace",
    "rest_drift",
    "timescale",
    "update_function",
    "write_card",
]

"""Probe 5: learning-rate adaptation -- how the effective step size responds to what it sees.

At a recorded snapshot, one input at a time is scaled by a factor and the effective step size
(:func:`~lopt.analysis.probing.effective_step_size`) is measured, relative to its value at
factor 1:

* **loss**: the ``loss=`` extra arg times the factor (flat for optimizers that ignore the loss);
* **gradient scale**: the whole gradient times the factor (flat for SGD; about ``1 / factor``
  for Adam once the new gradient dominates its second moment: Adam's RMS normalisation);
* **each state input**: one per-coordinate accumulator (a momentum, a second moment) times the
  factor, in every coordinate (Adam: ``nu`` scaled by ``c`` gives ``1 / sqrt(c)``).

This is the paper's "learning-rate adaptation" view (Maheswaranathan et al., arXiv 2011.02159):
which statistics the step size follows, and with what exponent (the log-log slope).

Example:
    >>> import jax, optax, lopt
    >>> from lopt.analysis import as_subject, learning_rate_adaptation, record_trace
    >>> task = lopt.tasks.build({"family": "quadratic", "dim": 4})
    >>> trace = record_trace(as_subject(optax.sgd(0.1)), task, key=jax.random.key(0), num_steps=20,
    ...                      num_snapshots=2)
    >>> result = learning_rate_adaptation(trace, factors=[0.1, 1.0, 10.0])
    >>> [round(x, 4) for x in result.gradient_response.tolist()]
    [1.0, 1.0, 1.0]
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lopt.analysis.probing import effective_step_size, new_figure, save_figure
from lopt.analysis.trace import Trace

__all__ = ["Adaptation", "learning_rate_adaptation"]


@dataclasses.dataclass(frozen=True)
class Adaptation:
    """Relative effective step size as inputs are scaled.

    Attributes:
        label: the optimizer.
        step: the snapshot step.
        factors: ``[F]`` scale factors.
        base_step_size: the effective step size at factor 1.
        loss_response: ``[F]`` with the loss scaled.
        gradient_response: ``[F]`` with the whole gradient scaled.
        slot_names: per-coordinate state inputs.
        slot_responses: ``[K, F]`` with each state input scaled.
    """

    label: str
    step: int
    factors: np.ndarray
    base_step_size: float
    loss_response: np.ndarray
    gradient_response: np.ndarray
    slot_names: tuple[str, ...]
    slot_responses: np.ndarray

    def exponent(self, response: np.ndarray, *, above: float = 0.0) -> float:
        """Log-log slope of a response over the factors ``>= above`` (``-1``: inversely proportional)."""
        ok = np.isfinite(response) & (response > 0) & (self.factors >= above)
        if ok.sum() < 2:
            return float("nan")
        return float(np.polyfit(np.log(self.factors[ok]), np.log(response[ok]), 1)[0])

    def plot(self, path: str | os.PathLike, *, max_slots: int = 6) -> str:
        """Saves the responses (log-log), with their exponents over factors >= 1 in the legend."""
        fig, axes = new_figure(1, width=6.5, height=4.2)
        ax = axes[0, 0]
        curves = [("loss", self.loss_response), ("gradient scale", self.gradient_response)]
        curves += list(zip(self.slot_names[:max_slots], self.slot_responses[:max_slots]))
        for i, (name, response) in enumerate(curves):
            positive = np.where(response > 0, response, np.nan)
            ax.loglog(self.factors, positive, "-" if i < 2 else "--",
                      label=f"{name}: exponent {self.exponent(response, above=1.0):+.2f}")
        ax.set_xlabel("factor applied to the input", fontsize=8)
        ax.set_ylabel("effective step size / at factor 1", fontsize=8)
        ax.set_title(f"step {self.step}; step size at factor 1: {self.base_step_size:.3g}; exponents: log-log "
                     "slope over factors ≥ 1", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        return save_figure(fig, path, f"{self.label}: learning-rate adaptation")


@functools.partial(jax.jit, static_argnames=("subject", "layout"))
def _responses(subject, layout, snapshot, factors):
    params, state, grads, loss = snapshot
    lr = functools.partial(effective_step_size, subject)
    base = lr(grads, state, params, loss)
    by_loss = jax.vmap(lambda f: lr(grads, state, params, loss * f))(factors)
    by_grad = jax.vmap(lambda f: lr(jax.tree.map(lambda g: g * f, grads), state, params, loss))(factors)
    by_slot = [jax.vmap(lambda f, n=name: lr(grads, layout.scale_slot(state, n, f), params, loss))(factors)
               for name in layout.slot_names]
    by_slot = jnp.stack(by_slot) if by_slot else jnp.zeros((0, factors.shape[0]))
    return base, by_loss / base, by_grad / base, by_slot / base


def learning_rate_adaptation(trace: Trace, *, snapshot: int = -1,
                             factors: Sequence[float] | None = None) -> Adaptation:
    """Measures how the effective step size follows the loss, the gradient scale and each accumulator.

    Args:
        trace: a recorded run; its subject is probed.
        snapshot: which snapshot (default the last).
        factors: positive scale factors (default 17 values from 0.01 to 100).

    Returns:
        The :class:`Adaptation`.
    """
    factors = np.logspace(-2, 2, 17) if factors is None else np.asarray(factors, np.float64)
    if factors.ndim != 1 or factors.size == 0 or np.any(factors <= 0):
        raise ValueError(f"factors must be a non-empty 1-D sequence of positive numbers, got {factors!r}.")
    layout = trace.layout()
    snap = trace.snapshot(snapshot)
    base, by_loss, by_grad, by_slot = _responses(trace.subject, layout,
                                                 (snap.params, snap.opt_state, snap.grads, snap.loss),
                                                 jnp.asarray(factors, jnp.float32))
    as_np = lambda x: np.asarray(x, np.float64)
    return Adaptation(label=trace.subject.label, step=snap.step, factors=factors, base_step_size=float(base),
                      loss_response=as_np(by_loss), gradient_response=as_np(by_grad), slot_names=layout.slot_names,
                      slot_responses=as_np(by_slot))

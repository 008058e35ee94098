"""Plain-language findings from probe results: the sentences an optimizer card opens with.

Each function reads one probe's result and says what it shows, naming the known mechanism it
matches (momentum, clipping, schedule, RMS adaptation, weight-dependent updates) with the number
that supports it, so a reader who has never seen the optimizer learns what it does.
"""

from __future__ import annotations

import numpy as np

from lopt.analysis.adaptation import Adaptation
from lopt.analysis.clipping import Clipping
from lopt.analysis.implicit_regularization import ImplicitRegularization
from lopt.analysis.meta_gradients import MetaGradientDiagnostics
from lopt.analysis.rest_drift import RestDrift
from lopt.analysis.schedule import Schedule
from lopt.analysis.timescales import Timescales
from lopt.analysis.update_function import UpdateFunction

__all__ = ["describe_adaptation", "describe_clipping", "describe_implicit_regularization",
           "describe_meta_gradients", "describe_rest_drift", "describe_schedule", "describe_timescales",
           "describe_update_function"]


def _g(x: float) -> str:
    return "∞" if not np.isfinite(x) else f"{x:.3g}"


def describe_update_function(result: UpdateFunction) -> str:
    """Sign behaviour, odd symmetry and the shape of the update-vs-gradient curve."""
    u, g = result.updates[-1], result.gradients
    du = u - np.interp(0.0, g, u)  # the response to the gradient, without the momentum's share
    descent = np.mean(du[g > 0][-5:] < 0) > 0.5 and np.mean(du[g < 0][:5] > 0) > 0.5
    odd = np.nanmax(np.abs(du + du[::-1])) / max(np.nanmax(np.abs(du)), 1e-30)
    top, mid = np.abs(du[-1]), np.abs(du[len(du) * 3 // 4])
    shape = "saturates" if top < 1.5 * mid else "keeps growing (no saturation this close to the recorded gradients)"
    return (f"**Update function** ({result.tensor}, step {result.steps[-1]}, gradients up to ±{g[-1]:.3g}): the "
            f"response to the gradient {'opposes' if descent else 'does not consistently oppose'} it (descent) and "
            f"{shape}; it is {'close to odd' if odd < 0.2 else 'not odd'} in the gradient (asymmetry {odd:.2f}), "
            f"and the state alone moves the update by {u[np.argmin(np.abs(g))]:+.3g} at zero gradient.")


def describe_clipping(result: Clipping) -> str:
    """Clipping thresholds per tensor kind, absolute and relative to the gradient RMS."""
    parts = []
    for kind, threshold in result.by_kind().items():
        rms = np.median([r for r, k in zip(result.gradient_rms, result.kinds) if k == kind])
        rel = f" ({threshold / rms:.3g}x the tensor's gradient RMS)" if np.isfinite(threshold) and rms > 0 else ""
        plural = {"bias": "biases", "weight": "weights", "scalar": "scalars"}[kind]
        parts.append(f"{plural} at |g| ≈ {_g(threshold)}{rel}")
    clipped = any(np.isfinite(t) for t in result.thresholds)
    head = "the update saturates -- **gradient clipping**" if clipped else "no saturation within the probed range"
    return f"**Clipping**: {head}: " + "; ".join(parts) + "."


def describe_timescales(result: Timescales) -> str:
    """State eigenvalue timescales and the effective averaging window of the impulse response."""
    modes = ", ".join(_g(t) for t in result.dominant()) or "none (stateless)"
    window = float(np.nanmedian(result.effective_timescale))
    kind = ("plain SGD (no memory)" if window < 1.5 else
            f"**momentum** averaging over about {window:.3g} steps (SGD with momentum β averages over 1/(1-β))")
    return (f"**Momentum**: the per-coordinate state decays with timescales {modes} steps (1/(1-|λ|) of the "
            f"state Jacobian's eigenvalues); the update's impulse response is {kind}.")


def describe_schedule(result: Schedule) -> str:
    """Warm-up and decay of the effective step size over the horizon."""
    if not result.has_counter:
        return "**Schedule**: the state has no step counter, so there is no learning-rate schedule."
    s, t = result.step_size, result.steps
    first, peak, last = s[0], np.nanmax(s), s[-1]
    peak_step = int(t[int(np.nanargmax(s))])
    words = []
    if peak > 1.2 * max(first, 1e-30) and peak_step > 0:
        words.append(f"**warm-up** from {_g(first)} to {_g(peak)} at step {peak_step}")
    if last < 0.8 * peak:
        words.append(f"**decay** to {_g(last)} ({last / peak:.2f}x the peak) by step {int(t[-1])}")
    if not words:
        words.append(f"flat at about {_g(np.nanmedian(s))} (no schedule)")
    return "**Schedule** (state held, step counter swept): " + " then ".join(words) + "."


def describe_adaptation(result: Adaptation) -> str:
    """Exponents of the step size's dependence on the loss, the gradient scale and the accumulators."""
    grad = result.exponent(result.gradient_response, above=1.0)
    loss = result.exponent(result.loss_response)
    slots = [(name, result.exponent(r)) for name, r in zip(result.slot_names, result.slot_responses)]
    strongest = sorted(slots, key=lambda x: -abs(x[1]) if np.isfinite(x[1]) else 0)[:2]
    grad_words = ("when gradients grow past their recorded size the step size falls in inverse proportion -- "
                  "full **RMS normalisation**" if grad < -0.8 else
                  "the step size shrinks as gradients grow -- partial **adaptation**" if grad < -0.2 else
                  "the step size barely follows the gradient scale")
    loss_words = ("it **reads the loss**" if abs(loss) > 0.05 else "it ignores the loss value")
    slot_words = ", ".join(f"{n} {e:+.2f}" for n, e in strongest) or "none"
    return (f"**Adaptation**: {grad_words} (exponent {grad:+.2f} for factors above 1); {loss_words} (exponent {loss:+.2f}); the "
            f"accumulators that move it most: {slot_words}.")


def describe_implicit_regularization(result: ImplicitRegularization, label: str) -> str:
    """Whether the optimizer prefers small-norm minimisers on (x - y)^2 / 2."""
    ratio = result.norm_ratio()[label]
    i = result.labels.index(label)
    steps = result.trajectories.shape[2] - 1
    if np.median(result.final_loss[i]) > 1e-4:
        return (f"**Implicit regularisation** on (x - y)²/2: it has not reached the minima after {steps} steps "
                f"(median final loss {np.median(result.final_loss[i]):.2g}), so no conclusion.")
    reference = np.maximum(np.linalg.norm(result.closest_minimizer, axis=-1), 1e-6)
    ratios = result.final_norms[i] / reference
    smaller, larger, n = int(np.sum(ratios < 0.98)), int(np.sum(ratios > 1.02)), len(ratios)
    if smaller == larger == 0:
        words = "it ends at the minimiser closest to the start, like SGD and Adam (no implicit regularisation)"
    elif smaller >= 0.75 * n:
        words = (f"it ends at smaller-norm minimisers from {smaller} of {n} starts (median {ratio:.2f}x the closest "
                 "one): **implicit regularisation** towards small norms")
    elif larger >= 0.75 * n:
        words = f"it ends at larger-norm minimisers from {larger} of {n} starts (median {ratio:.2f}x the closest one)"
    else:
        words = (f"it ends at other minimisers than the closest one -- smaller-norm from {smaller} of {n} starts, "
                 f"larger from {larger} (median {ratio:.2f}x): its steps depend on the parameter values, with no "
                 "consistent preference for small norms")
    return f"**Implicit regularisation** on (x - y)²/2: {words}."


def describe_meta_gradients(result: MetaGradientDiagnostics) -> str:
    """Exploding backprop vs bounded ES, and the transition spectrum."""
    rates = {n: result.growth_rate(n) for n in ("bptt", "pes", "es")}
    rho = float(np.nanmedian(result.spectral_radius))
    lyap = result.lyapunov_exponent()
    regime = "chaotic" if lyap > 0.05 else "marginally stable" if lyap > 0.005 else "stable"
    return (f"**Meta-gradients**: along one unroll the transition Jacobian's median spectral radius is {rho:.3g} and "
            f"perturbations grow by {lyap:+.3f} nats/step over the second half ({regime} inner dynamics); "
            f"the variance of backprop through the unroll grows as T^{rates['bptt']:.2f}, PES as T^{rates['pes']:.2f} "
            f"and full-unroll ES as T^{rates['es']:.2f} (T = {', '.join(str(t) for t in result.unroll_lengths)}).")


def describe_rest_drift(result: RestDrift) -> str:
    """Whether the update vanishes at a stationary point with no gradient history, and by how much it does not."""
    relative = result.relative()
    if np.all(result.drift == 0):
        return ("**At rest**: with a zero gradient and no gradient history the update is exactly 0 at every "
                "snapshot: it can come to rest at a stationary point.")
    worst = float(np.max(relative))
    typical = float(np.median(relative[-1]))
    return (f"**At rest**: with a zero gradient and no gradient history it still moves, by {_g(typical)}x its own "
            f"step at the last snapshot (median over tensors; up to {_g(worst)}x): a **drift** (a learned bias, or "
            "a function of the weights such as weight decay) that keeps it from settling at a stationary point "
            "of the loss.")

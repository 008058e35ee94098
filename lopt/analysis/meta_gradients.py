"""Probe 7: meta-gradient diagnostics -- estimator variance, chaotic meta-loss, state-transition spectra.

"Gradients are not all you need" (Metz, Freeman, Schoenholz, Kachman; arXiv 2111.05803): the
gradient of a meta-loss through an unroll is a product of inner-state transition Jacobians; when
their spectral radius exceeds 1 the dynamics are chaotic, the meta-loss surface turns rough as the
unroll grows, and backpropagated gradients explode, while evolution strategies (which only see the
bounded loss) do not. Three measurements, for a learned optimizer at ``theta`` on a task:

* **Estimator variance vs unroll length.** For unrolls of ``T`` steps (fresh init and batches per
  sample), the total variance (trace of the covariance over samples) of: ``bptt`` (backprop through
  the whole unroll), ``tbptt`` (backprop through truncations of ``K`` steps), ``es`` (antithetic ES
  over the whole unroll), ``truncated_es`` (fresh perturbation per truncation, both members
  restarted from the ``+`` member's state) and ``pes`` (persistent ES: perturbations accumulate
  over the truncations; Vicol et al. 2021). The meta-loss is the mean training loss over the unroll
  (each step's loss capped at ``loss_clip`` times the absolute initial loss).
* **1-D slices** of the meta-loss along a random unit direction of theta, at several unroll lengths.
* **Spectral radius** of the inner-state transition Jacobian ``d(params, state)_{t+1} / d(params,
  state)_t`` along one unroll (power iteration), and the finite-time growth ``log |J_t ... J_1 v|``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax

from lopt.analysis.probing import new_figure, save_figure
from lopt.analysis.subject import Subject
from lopt.tasks.base import Task

__all__ = ["ESTIMATORS", "MetaGradientDiagnostics", "meta_gradient_diagnostics"]

#: The estimators compared, in plot order.
ESTIMATORS = ("bptt", "tbptt", "es", "truncated_es", "pes")


@dataclasses.dataclass(frozen=True)
class MetaGradientDiagnostics:
    """Meta-gradient estimator statistics, meta-loss slices and state-transition spectra.

    Attributes:
        label: the optimizer.
        unroll_lengths: ``[U]`` unroll lengths ``T``.
        truncation: ``K``, the truncation length of tbptt, truncated_es and pes.
        variance: ``{estimator: [U]}`` total variance of the estimate over samples.
        mean_norm: ``{estimator: [U]}`` norm of the mean estimate.
        nonfinite: ``{estimator: [U]}`` fraction of samples with a non-finite estimate (left out).
        slice_offsets: ``[A]`` offsets along the random direction.
        slice_lengths: ``[V]`` unroll lengths of the slices.
        slice_losses: ``[V, A]`` meta-loss along the slice.
        spectral_steps: ``[R]`` steps at which the spectral radius was measured.
        spectral_radius: ``[R]`` spectral radius of the transition Jacobian there.
        growth: ``[Tmax]`` ``log |J_t ... J_1 v|`` for a random unit ``v``.
    """

    label: str
    unroll_lengths: np.ndarray
    truncation: int
    variance: dict[str, np.ndarray]
    mean_norm: dict[str, np.ndarray]
    nonfinite: dict[str, np.ndarray]
    slice_offsets: np.ndarray
    slice_lengths: np.ndarray
    slice_losses: np.ndarray
    spectral_steps: np.ndarray
    spectral_radius: np.ndarray
    growth: np.ndarray

    def roughness(self) -> np.ndarray:
        """``[V]`` mean ``|second difference|`` of each slice over its range (grows when chaotic)."""
        losses = self.slice_losses
        span = np.nanmax(losses, axis=1) - np.nanmin(losses, axis=1)
        return np.nanmean(np.abs(np.diff(losses, 2, axis=1)), axis=1) / np.maximum(span, 1e-12)

    def lyapunov_exponent(self) -> float:
        """Growth of ``log |J_t ... J_1 v|`` per step over the second half of the unroll (> 0: chaotic)."""
        half = len(self.growth) // 2
        return float((self.growth[-1] - self.growth[half - 1]) / (len(self.growth) - half)) if half else float("nan")

    def growth_rate(self, name: str) -> float:
        """Log-log slope of ``name``'s variance over the unroll lengths."""
        v = self.variance[name]
        ok = np.isfinite(v) & (v > 0)
        if ok.sum() < 2:
            return float("nan")
        return float(np.polyfit(np.log(self.unroll_lengths[ok]), np.log(v[ok]), 1)[0])

    def plot(self, path: str | os.PathLike) -> str:
        """Variance vs unroll length, meta-loss slices, and the transition spectrum, side by side."""
        fig, axes = new_figure(3, width=4.6, height=3.9)
        ax = axes[0, 0]
        for name in ESTIMATORS:
            ax.loglog(self.unroll_lengths, self.variance[name], "o-", markersize=3,
                      label=f"{name}: slope {self.growth_rate(name):.2f}")
        ax.set_xticks(self.unroll_lengths, [str(t) for t in self.unroll_lengths], fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("unroll length T (steps)", fontsize=8)
        ax.set_ylabel("total variance of the estimate", fontsize=8)
        ax.set_title(f"gradient-estimator variance (truncation K = {self.truncation})", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        ax = axes[0, 1]
        rough = self.roughness()
        for v, length in enumerate(self.slice_lengths):
            curve = self.slice_losses[v]
            ax.plot(self.slice_offsets, curve - np.nanmin(curve), label=f"T = {length}: roughness {rough[v]:.3f}")
        ax.set_xlabel("offset along a random unit direction of theta", fontsize=8)
        ax.set_ylabel("meta-loss - its minimum on the slice", fontsize=8)
        ax.set_title("meta-loss along a 1-D slice of theta", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        ax = axes[0, 2]
        steps = np.arange(1, len(self.growth) + 1)
        ax.plot(steps, self.growth / np.log(10), label="log10 |J_t ... J_1 v|")
        ax.set_xlabel("inner step t", fontsize=8)
        ax.set_ylabel("log10 norm", fontsize=8)
        twin = ax.twinx()
        twin.plot(self.spectral_steps, self.spectral_radius, "o--", color="C3", markersize=3,
                  label="spectral radius of J_t")
        twin.axhline(1.0, color="C3", linewidth=0.6)
        twin.set_ylabel("spectral radius", fontsize=8, color="C3")
        ax.set_title("inner-state transition Jacobian", fontsize=9)
        ax.grid(True, alpha=0.3)
        lines = ax.get_legend_handles_labels()
        lines2 = twin.get_legend_handles_labels()
        ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=7, loc="upper left")
        return save_figure(fig, path, f"{self.label}: meta-gradient diagnostics")


def _build(subject: Subject, theta, horizon: int) -> optax.GradientTransformationExtraArgs:
    return subject.with_theta(theta, num_steps=horizon)


def _step(subject, horizon, theta, task, params, state, batch_key, clip):
    loss, grads = jax.value_and_grad(task.loss)(params, task.sample_batch(batch_key, "train"))
    updates, state = _build(subject, theta, horizon).update(grads, state, params, loss=loss)
    return optax.apply_updates(params, updates), state, jnp.minimum(jnp.nan_to_num(loss, nan=clip), clip)


def _loss_cap(task, params0, data_key, clip_factor):
    """Each step's loss is capped at ``clip_factor * |initial loss|`` (a diverging run scores the cap)."""
    return clip_factor * jnp.abs(task.loss(params0, task.sample_batch(jax.random.fold_in(data_key, 0), "train")))


def _keys(key):
    init_key, data_key, noise_key = jax.random.split(key, 3)
    return init_key, data_key, noise_key


@functools.partial(jax.jit, static_argnames=("subject", "max_len"))
def _backprop(subject, max_len, theta, task, key, lengths, truncation, clip_factor):
    """``[U, ...]`` gradients of the mean loss over the first ``lengths[u]`` steps (one forward pass)."""
    init_key, data_key, _ = _keys(key)
    params0 = task.init(init_key)
    clip = _loss_cap(task, params0, data_key, clip_factor)
    clip = jax.lax.stop_gradient(clip)

    def meta_losses(theta):
        def body(carry, t):
            params, state = carry
            cut = t % truncation == 0
            params, state = jax.tree.map(lambda x: jnp.where(cut, jax.lax.stop_gradient(x), x), (params, state))
            params, state, loss = _step(subject, max_len, theta, task, params, state,
                                        jax.random.fold_in(data_key, t), clip)
            return (params, state), loss

        state0 = _build(subject, theta, max_len).init(params0)
        _, losses = jax.lax.scan(body, (params0, state0), jnp.arange(max_len))
        mask = jnp.arange(max_len)[None, :] < lengths[:, None]
        return jnp.sum(jnp.where(mask, losses[None, :], 0.0), axis=1) / lengths

    return jax.jacrev(meta_losses)(theta)


@functools.partial(jax.jit, static_argnames=("subject", "max_len"))
def _evolution(subject, max_len, theta, task, key, lengths, truncation, persistent, std, clip_factor):
    """``[U, ...]`` antithetic estimates for every unroll length (one pass over ``max_len`` steps)."""
    init_key, data_key, noise_key = _keys(key)
    params0 = task.init(init_key)
    clip = _loss_cap(task, params0, data_key, clip_factor)
    leaves, treedef = jax.tree.flatten(theta)

    def noise(j):
        ks = jax.random.split(jax.random.fold_in(noise_key, j), len(leaves))
        return jax.tree.unflatten(treedef, [std * jax.random.normal(k, jnp.shape(x)) for k, x in zip(ks, leaves)])

    def body(carry, t):
        plus, minus, xi, total = carry
        start = t % truncation == 0
        eps = noise(t // truncation)
        xi = jax.tree.map(lambda a, e: jnp.where(start, jnp.where(persistent, a + e, e), a), xi, eps)
        minus = jax.tree.map(lambda m, p: jnp.where(start & ~persistent, p, m), minus, plus)
        batch_key = jax.random.fold_in(data_key, t)
        theta_p = jax.tree.map(lambda a, e: a + e, theta, eps)
        theta_m = jax.tree.map(lambda a, e: a - e, theta, eps)
        *plus, loss_p = _step(subject, max_len, theta_p, task, *plus, batch_key, clip)
        *minus, loss_m = _step(subject, max_len, theta_m, task, *minus, batch_key, clip)
        scale = jnp.where(t < lengths, (loss_p - loss_m) / (2.0 * std**2), 0.0)  # [U]
        total = jax.tree.map(lambda a, x: a + scale.reshape(scale.shape + (1,) * x.ndim) * x, total, xi)
        return (tuple(plus), tuple(minus), xi, total), None

    state0 = _build(subject, theta, max_len).init(params0)
    zeros = jax.tree.map(jnp.zeros_like, theta)
    totals = jax.tree.map(lambda x: jnp.zeros(lengths.shape + jnp.shape(x), jnp.float32), theta)
    (_, _, _, total), _ = jax.lax.scan(body, ((params0, state0), (params0, state0), zeros, totals),
                                       jnp.arange(max_len))
    return jax.tree.map(lambda x: x / lengths.reshape(lengths.shape + (1,) * (x.ndim - 1)), total)


@functools.partial(jax.jit, static_argnames=("subject", "max_len"))
def _meta_loss(subject, max_len, theta, task, key, length, clip_factor):
    init_key, data_key, _ = _keys(key)
    params0 = task.init(init_key)
    clip = _loss_cap(task, params0, data_key, clip_factor)

    def body(carry, t):
        params, state = carry
        new_p, new_s, loss = _step(subject, max_len, theta, task, params, state, jax.random.fold_in(data_key, t), clip)
        return (new_p, new_s), jnp.where(t < length, loss, 0.0)

    _, losses = jax.lax.scan(body, (params0, _build(subject, theta, max_len).init(params0)), jnp.arange(max_len))
    return losses.sum() / length


@functools.partial(jax.jit, static_argnames=("subject", "max_len", "every", "iterations"))
def _spectrum(subject, max_len, every, iterations, theta, task, key):
    init_key, data_key, noise_key = _keys(key)
    params0 = task.init(init_key)
    optimizer = _build(subject, theta, max_len)
    state0 = optimizer.init(params0)
    flat0, unravel = jax.flatten_util.ravel_pytree((params0, _floats(state0)))

    def transition(z, t, ints):
        params, floats = unravel(z)
        state = _merge(state0, floats, ints)
        loss, grads = jax.value_and_grad(task.loss)(params, task.sample_batch(jax.random.fold_in(data_key, t), "train"))
        updates, state = optimizer.update(grads, state, params, loss=loss)
        return jax.flatten_util.ravel_pytree((optax.apply_updates(params, updates), _floats(state)))[0], _ints(state)

    def body(carry, t):
        z, ints, v, log_norm = carry
        z_next, jv, ints_next = jax.jvp(lambda zz: transition(zz, t, ints), (z,), (v,), has_aux=True)
        norm = jnp.linalg.norm(jv)
        return (z_next, ints_next, jv / norm, log_norm + jnp.log(norm)), (log_norm + jnp.log(norm), z, ints)

    v0 = jax.random.normal(noise_key, flat0.shape)
    v0 = v0 / jnp.linalg.norm(v0)
    _, (growth, zs, ints_seq) = jax.lax.scan(body, (flat0, _ints(state0), v0, 0.0), jnp.arange(max_len))

    def radius(t):
        z, ints = zs[t], jax.tree.map(lambda x: x[t], ints_seq)

        def power(v, _):
            jv = jax.jvp(lambda zz: transition(zz, t, ints), (z,), (v,), has_aux=True)[1]
            norm = jnp.linalg.norm(jv)
            return jv / norm, jnp.log(norm)

        _, logs = jax.lax.scan(power, v0, None, length=iterations)
        return jnp.exp(jnp.mean(logs[iterations // 2:]))

    steps = jnp.arange(0, max_len, every)
    return growth, steps, jax.lax.map(radius, steps)


def _floats(state):
    return [x for x in jax.tree.leaves(state) if jnp.issubdtype(jnp.result_type(x), jnp.floating)]


def _ints(state):
    return [x for x in jax.tree.leaves(state) if not jnp.issubdtype(jnp.result_type(x), jnp.floating)]


def _merge(like, floats, ints):
    leaves, treedef = jax.tree.flatten(like)
    floats, ints = iter(floats), iter(ints)
    return jax.tree.unflatten(treedef, [next(floats) if jnp.issubdtype(jnp.result_type(x), jnp.floating)
                                        else next(ints) for x in leaves])


def _total_variance(samples) -> tuple[float, float, float]:
    flat = np.concatenate([np.asarray(x, np.float64).reshape(x.shape[0], -1) for x in jax.tree.leaves(samples)], 1)
    finite = np.all(np.isfinite(flat), axis=1)
    if finite.sum() < 2:
        return float("nan"), float("nan"), float(1 - finite.mean())
    good = flat[finite]
    return float(good.var(axis=0, ddof=1).sum()), float(np.linalg.norm(good.mean(axis=0))), float(1 - finite.mean())


def meta_gradient_diagnostics(subject: Subject, task: Task, *, key: jax.Array,
                              unroll_lengths: Sequence[int] = (10, 20, 40, 80, 160), truncation: int = 10,
                              num_samples: int = 16, std: float = 0.01, loss_clip: float = 10.0,
                              slice_lengths: Sequence[int] | None = None, slice_width: float = 1.0,
                              num_offsets: int = 41, spectral_every: int | None = None,
                              power_iterations: int = 40) -> MetaGradientDiagnostics:
    """Measures estimator variance, meta-loss slices and transition spectra for a learned optimizer.

    Args:
        subject: a learned optimizer with theta (hand-designed optax has none: use ``learnable_adam``
            or ``learnable_sgdm`` for Adam or SGD).
        task: the inner task (keep it small: every unroll length is run for every sample).
        key: PRNG key (samples, perturbations and the slice direction are drawn from it).
        unroll_lengths: increasing unroll lengths ``T``.
        truncation: ``K`` for tbptt, truncated_es and pes.
        num_samples: samples per (estimator, ``T``) for the variance.
        std: ES perturbation standard deviation.
        loss_clip: each step's loss is capped at this multiple of the absolute initial loss.
        slice_lengths: unroll lengths of the 1-D slices (default: first, middle and last of ``unroll_lengths``).
        slice_width: the slice spans ``[-slice_width, slice_width]`` along a random unit direction.
        num_offsets: points on the slice.
        spectral_every: measure the spectral radius every this many steps (default ``Tmax // 10``).
        power_iterations: power iterations per spectral radius.

    Returns:
        The :class:`MetaGradientDiagnostics`.
    """
    if not isinstance(subject, Subject) or not subject.is_learned:
        raise TypeError("meta_gradient_diagnostics needs a learned optimizer with theta (a Subject from "
                        "as_subject(lopt_, theta=...)); for Adam use as_subject('learnable_adam').")
    lengths = np.asarray(unroll_lengths, np.int64)
    if lengths.ndim != 1 or lengths.size < 2 or np.any(lengths < 1) or np.any(np.diff(lengths) <= 0):
        raise ValueError(f"unroll_lengths={unroll_lengths!r} must be at least two increasing positive ints.")
    if isinstance(truncation, bool) or not isinstance(truncation, int) or truncation < 1:
        raise ValueError(f"truncation={truncation!r} must be a positive int.")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples={num_samples!r} must be an int >= 2 (a variance needs two samples).")
    max_len = int(lengths.max())
    theta = subject.theta
    keys = jax.random.split(jax.random.fold_in(key, 0), num_samples)
    backprop = jax.vmap(_backprop, in_axes=(None, None, None, None, 0, None, None, None))
    evolution = jax.vmap(_evolution, in_axes=(None, None, None, None, 0, None, None, None, None, None))
    variance, mean_norm, nonfinite = ({n: np.zeros(len(lengths)) for n in ESTIMATORS} for _ in range(3))
    all_lengths = jnp.asarray(lengths, jnp.float32)
    runs = {
        "bptt": lambda: backprop(subject, max_len, theta, task, keys, all_lengths, max_len + 1, loss_clip),
        "tbptt": lambda: backprop(subject, max_len, theta, task, keys, all_lengths, truncation, loss_clip),
        "es": lambda: evolution(subject, max_len, theta, task, keys, all_lengths, max_len + 1, True, std, loss_clip),
        "truncated_es": lambda: evolution(subject, max_len, theta, task, keys, all_lengths, truncation, False, std,
                                          loss_clip),
        "pes": lambda: evolution(subject, max_len, theta, task, keys, all_lengths, truncation, True, std, loss_clip),
    }
    for name, run in runs.items():
        estimates = run()  # leaves [num_samples, U, ...]
        for i in range(len(lengths)):
            variance[name][i], mean_norm[name][i], nonfinite[name][i] = _total_variance(
                jax.tree.map(lambda x, i=i: x[:, i], estimates))
    slice_lengths = np.asarray(sorted({int(lengths[0]), int(lengths[len(lengths) // 2]), max_len})
                               if slice_lengths is None else slice_lengths, np.int64)
    leaves, treedef = jax.tree.flatten(theta)
    dkeys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    direction = [jax.random.normal(k, jnp.shape(x)) for k, x in zip(dkeys, leaves)]
    norm = jnp.sqrt(sum(jnp.sum(d**2) for d in direction))
    offsets = np.linspace(-slice_width, slice_width, num_offsets)
    slice_key = jax.random.fold_in(key, 2)
    at = jax.vmap(lambda a, length: _meta_loss(subject, max_len, jax.tree.unflatten(
        treedef, [x + a * d / norm for x, d in zip(leaves, direction)]), task, slice_key, length, loss_clip),
        in_axes=(0, None))
    slices = np.stack([np.asarray(at(jnp.asarray(offsets, jnp.float32), jnp.int32(v))) for v in slice_lengths])
    every = spectral_every or max(1, max_len // 10)
    growth, steps, radius = _spectrum(subject, max_len, every, power_iterations, theta, task, jax.random.fold_in(key, 3))
    return MetaGradientDiagnostics(label=subject.label, unroll_lengths=lengths, truncation=truncation,
                                   variance=variance, mean_norm=mean_norm, nonfinite=nonfinite,
                                   slice_offsets=offsets, slice_lengths=slice_lengths, slice_losses=slices,
                                   spectral_steps=np.asarray(steps), spectral_radius=np.asarray(radius, np.float64),
                                   growth=np.asarray(growth, np.float64))

"""Nominal-term learned optimizer: Adam at its initial theta, a small learned correction on top.

The architecture of lopt's pretrained optimizer. It is built for generalising from a small
meta-training budget, following three findings from the field:

* **A nominal term** (Harrison et al. 2022, "A closer look at learned optimization"): the update
  is a hand-designed preconditioned direction (Adam's bias-corrected ``m / (sqrt(v) + eps)``)
  plus a learned term. At its initial theta the learned term is exactly zero and every
  multiplier is one, so the optimizer *is* ``optax.adam(1e-3)``; meta-training starts from an
  Adam-level optimizer and only has to learn to beat it.
* **Small, normalised per-parameter network** (Celo2, Moudgil et al. 2026): every input is
  scale-free (Adam-preconditioned gradient and momenta at 0.9/0.99/0.999, the Adafactor-
  normalised gradient, the parameter over its tensor's RMS), clipped, fed to an MLP with two
  hidden layers of 8 units. Its two outputs add a direction ``d`` to the nominal direction and
  scale the step by ``exp(s)``. About 300 FLOPs and 16 bytes of state per parameter, so a fused
  one-pass kernel can serve it (see ``lopt.kernels``).
* **Learned schedule and per-tensor scaling**: the base step size is
  ``lr * exp(schedule(tau))`` with a piecewise-linear learned log-schedule over the fraction of
  training ``tau = t / num_steps`` (warm-up and decay are learned, not hand-set), times a learned
  multiplier for vectors and for matrices, and ``(fan_in / 64) ** -mup`` for matrices with a
  learned exponent (muP-style width scaling, initialised at 0).

* **Distance-adaptive step size** (``step_size="distance"``, optional): the base step is
  multiplied by Prodigy's running estimate ``d`` of the distance to the solution
  (:mod:`lopt.learned.distance`), so the step follows the scale of the parameters instead of
  being fixed at ``lr``; at its initial theta (``lr = 1``) this is Prodigy's rule on Adam's
  direction. Costs 8 more bytes of state per parameter; the PyTorch port and the fused kernel
  have it.
* **Anchored direction** (``anchored_direction=True``, optional; lopt's pretrained weights): the
  learned direction minus the network's direction with every gradient input at zero, so the
  update vanishes where the gradient history does and a trained optimizer can converge to a
  stationary point instead of being pushed past it by a learned bias.

Per-tensor context (fraction-of-training embedding, tensor rank and size) enters the MLP's
first layer once per tensor. The MLP is written as unrolled elementwise multiply-adds, so XLA
fuses features, network and update into one loop over the tensor (no ``[params, 8]``
activations in memory).

Without ``num_steps`` the schedule is frozen at ``unknown_horizon_fraction`` of training (no
warm-up, no final decay); pass ``num_steps`` for the full learned schedule.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from lopt.learned import NominalLOpt
    >>> lopt_ = NominalLOpt()
    >>> theta = lopt_.init(jax.random.key(0))
    >>> opt, adam = lopt_.optimizer(theta, num_steps=100), optax.adam(1e-3)
    >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
    >>> grads = jax.tree.map(lambda p: p + 0.5, params)
    >>> u1, _ = opt.update(grads, opt.init(params), params)
    >>> u2, _ = adam.update(grads, adam.init(params), params)
    >>> bool(jnp.allclose(u1["w"], u2["w"], rtol=1e-5))
    True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lopt.learned import base
from lopt.learned import distance as D
from lopt.learned import features as F
from lopt.learned import stochastic_rounding as SR

__all__ = ["NominalLOpt", "NominalState"]

_f32 = jnp.float32
#: Per-parameter inputs: g, three momenta (Adam-preconditioned), factored g, p / rms(p).
NUM_PARAM_INPUTS = 6
#: ``step_size`` choices: Adam's fixed base step, or scaled by the distance estimate.
STEP_SIZES = ("adam", "distance")
#: Per-tensor context inputs: fraction embedding (9), is-vector, log size, log fan-in.
NUM_CONTEXT_INPUTS = len(F.FRACTION_POINTS) + 3
FAN_IN_REFERENCE = 64.0


class NominalState(NamedTuple):
    """State of :class:`NominalLOpt`.

    Attributes:
        count: int32 step counter.
        momentum: per leaf ``(*p.shape, 3)`` momenta (float32, or bfloat16 with ``state_dtype``).
        rms: per leaf second moment (``p.shape``; float32 or bfloat16 likewise).
        factored: per leaf :class:`~lopt.learned.features.FactoredAccumulator` (one decay).
        distance: :class:`~lopt.learned.distance.DistanceState` with ``step_size="distance"``,
            else None.
    """

    count: jax.Array
    momentum: Any
    rms: Any
    factored: Any
    distance: Any = None


def _cast(tree: Any, dtype: Any) -> Any:
    return jax.tree.map(lambda x: x.astype(dtype), tree)


def _first_layer_bias(net: dict, time_context: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """The first layer's bias for a tensor of ``shape`` this step: ``b0`` plus the projection of the
    step's time context and the tensor's (is it a vector, log size, log fan-in)."""
    tensor_context = jnp.asarray(
        [float(len(shape) < 2), math.log10(max(int(np.prod(shape)), 1)) / 4.0,
         math.log10(_fan_in(shape)) / 4.0], _f32)
    return net["b0"] + jnp.concatenate([time_context, tensor_context]) @ net["w_context"]


def _tensor_multiplier(theta: dict[str, Any], shape: tuple[int, ...]) -> jax.Array:
    """The step's multiplier for a tensor of ``shape``: ``exp`` of theta's vector or matrix
    multiplier, matrices also scaled by ``(fan_in / FAN_IN_REFERENCE) ** -mup_exponent``."""
    if len(shape) < 2:
        return jnp.exp(theta["log_tensor_mult"][0])
    return jnp.exp(theta["log_tensor_mult"][1]
                   - theta["mup_exponent"] * math.log(_fan_in(shape) / FAN_IN_REFERENCE))


def _widen(state: NominalState) -> NominalState:
    """The state with its per-parameter arrays in float32 (a no-op for float32 state)."""
    distance = state.distance
    if distance is not None:
        distance = distance._replace(grad_sum=_cast(distance.grad_sum, _f32), params0=_cast(distance.params0, _f32))
    return state._replace(momentum=_cast(state.momentum, _f32), rms=_cast(state.rms, _f32), distance=distance)


def _round_state(state: NominalState, treedef: Any, leaf_offset: int) -> NominalState:
    """The new state's per-parameter arrays stochastically rounded to bfloat16.

    The random bits of an entry hash its flat index in its tensor, the new step count and the
    tensor's position in the tree; each accumulator takes its share of them (momenta ``0..k-1``,
    second moment ``k``, gradient sum ``k + 1``: :func:`lopt.learned.stochastic_rounding.split_bits`),
    exactly as the fused kernel does.
    """
    step = state.count.astype(jnp.uint32)
    momentum, rms = treedef.flatten_up_to(state.momentum), treedef.flatten_up_to(state.rms)
    sums = treedef.flatten_up_to(state.distance.grad_sum) if state.distance is not None else None
    new_m, new_v, new_sums = [], [], []
    for i, (m, v) in enumerate(zip(momentum, rms)):
        bits = SR.entry_bits(v.shape, step, i + leaf_offset)
        k = m.shape[-1]
        new_m.append(SR.round_columns(m, bits))
        new_v.append(SR.to_bfloat16(v, SR.split_bits(bits, k)))
        if sums is not None:
            new_sums.append(SR.to_bfloat16(sums[i], SR.split_bits(bits, k + 1)))
    distance = state.distance
    if distance is not None:
        distance = distance._replace(grad_sum=treedef.unflatten(new_sums),
                                     params0=_cast(distance.params0, jnp.bfloat16))  # unchanged, exact
    return state._replace(momentum=treedef.unflatten(new_m), rms=treedef.unflatten(new_v), distance=distance)


def _fan_in(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape[:-1])) if len(shape) >= 2 else 1


def _dense(xs: list[jax.Array], w: jax.Array, b: jax.Array, extra: jax.Array | None = None) -> list[jax.Array]:
    """``y_j = sum_i x_i w_ij + b_j (+ extra_j)`` as unrolled elementwise ops (fuses in XLA)."""
    bias = b if extra is None else b + extra
    return [sum(x * w[i, j] for i, x in enumerate(xs)) + bias[j] for j in range(w.shape[1])]


@dataclasses.dataclass(frozen=True)
class NominalLOpt(base.LearnedOptimizer):
    """Adam plus a learned per-parameter correction, a learned schedule and learned tensor scales.

    Attributes:
        lr: the base learning rate at the initial theta; None: Adam's default 1e-3, or 1.0 (a
            multiplier of the distance estimate, Prodigy's default) with ``step_size="distance"``.
        b1, b2: decays of the nominal Adam direction's first and second moments.
        extra_decays: two more momentum decays fed to the network.
        factored_decay: decay of the Adafactor row/column accumulators.
        eps: Adam's epsilon.
        hidden_size: width of the two hidden layers.
        schedule_knots: knots of the piecewise-linear log-learning-rate schedule over [0, 1].
        input_clip: every network input is clipped to ``[-input_clip, input_clip]``.
        update_clip: the combined direction is clipped to this magnitude per parameter.
        unknown_horizon_fraction: the fraction of training assumed when ``num_steps`` is None.
        step_size: ``"adam"`` (the base step is ``lr``) or ``"distance"`` (``lr`` times the
            running distance estimate of :mod:`lopt.learned.distance`).
        initial_distance: the distance estimate's starting value (``"distance"`` only).
        relative_initial_distance: the estimate starts at ``max(initial_distance,
            relative_initial_distance * rms(x0))`` (:func:`lopt.learned.distance.init`): a
            start in proportion to the parameters' scale, and never below the resolution of
            the parameters' dtype (bfloat16: 2**-7 of the RMS). 0: at ``initial_distance``.
        distance_decay: the decay of its running sums (Prodigy: ``sqrt(b2)``).
        anchored_direction: subtract from the learned direction the network's direction at the
            same parameter input and context with every gradient input (gradient, momenta,
            factored gradient) at zero. The update is then exactly zero where the gradient history
            is, so the optimizer comes to rest at a stationary point instead of drifting: unanchored,
            a trained network's direction at zero gradient inputs is a few hundredths of an Adam
            step that never decays (it pushed the step-3,779 weights up Rosenbrock's valley, from
            loss 24 at step 100 to 109 at step 10,000). Costs a second pass of the network, whose first
            layer sees one input (515 instead of 338 FLOPs per parameter with the distance step; the
            bytes moved, which bound a large model's step, do not change).
        concatenate_tensors: run the network once over every tensor's entries joined into one
            vector instead of once per tensor. Same update (same theta); a compiled program then
            holds one copy of the network whatever the number of tensors: about 3x fewer
            operations in a meta-training program, which is what GPU compile time follows
            (the campaign's GPU sessions use it), at the price of copies that make a large
            model's step slower (the per-tensor default is the one to deploy). An execution
            option: not part of :meth:`config`, so theta files do not record it.
        state_dtype: ``"float32"``, or ``"bfloat16"`` to store the per-parameter state (momenta,
            second moment, the distance step's gradient sum and initial parameters) in half the
            memory: the step computes in float32 and rounds the new state *stochastically*
            (:mod:`lopt.learned.stochastic_rounding`), so slow accumulators keep moving on
            average where nearest rounding would freeze them. Halves the bytes a large model's
            step moves for its state (the pretrained optimizer: 24 -> 12 bytes of state per
            parameter). The Adafactor row/column accumulators and the counters stay float32. An
            execution option, like ``concatenate_tensors``: the same theta serves either.
        kernel: which implementation this optimizer's steps use, whatever :mod:`lopt.kernels`'
            global mode says: ``"auto"`` the fused GPU kernel (:mod:`lopt.kernels.nominal_step`;
            the XLA path off GPU), ``"xla"`` the plain path, ``"pallas"``/``"interpret"`` as in
            :mod:`lopt.kernels.select`; ``None`` (default) follows the global mode. An execution
            option: the same theta serves either.
        kernel_precision: the fused kernel's network on the GPU: ``"float32"`` (the default, as the
            XLA path) or ``"float16"``, two parameters per packed multiply-add
            (:mod:`lopt.kernels.packed_half`): 28% fewer instructions in the pretrained step's main
            pass, an update error of ~4e-4 against the float32 step. Interpret mode emulates it; the
            XLA path ignores it. An execution option.

    Example:
        >>> NominalLOpt().flops_per_param() < 400
        True
    """

    name: ClassVar[str] = "nominal"
    needs_params: ClassVar[bool] = True
    execution_options: ClassVar[tuple[str, ...]] = ("concatenate_tensors", "state_dtype", "kernel",
                                                    "kernel_precision")

    lr: float | None = None
    b1: float = 0.9
    b2: float = 0.999
    extra_decays: tuple[float, ...] = (0.99, 0.999)
    factored_decay: float = 0.999
    eps: float = 1e-8
    hidden_size: int = 8
    schedule_knots: int = 9
    input_clip: float = 10.0
    update_clip: float = 10.0
    unknown_horizon_fraction: float = 0.3
    step_size: str = "adam"
    initial_distance: float = 1e-6
    relative_initial_distance: float = 0.0
    distance_decay: float = 0.9995
    anchored_direction: bool = False
    concatenate_tensors: bool = False
    state_dtype: str = "float32"
    kernel: str | None = None
    kernel_precision: str = "float32"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        self._check_kernel_option()
        if self.kernel_precision not in ("float32", "float16"):
            raise ValueError(f"{owner}: kernel_precision={self.kernel_precision!r} must be 'float32' or "
                             "'float16' (the fused kernel's network).")
        if self.step_size not in STEP_SIZES:
            raise ValueError(f"{owner}: step_size={self.step_size!r}; use one of {STEP_SIZES}.")
        SR.storage_dtype(owner, self.state_dtype)
        if self.lr is None:
            base.set_field(self, "lr", 1.0 if self.step_size == "distance" else 1e-3)
        base.check_positive(owner, "initial_distance", self.initial_distance)
        if not (isinstance(self.relative_initial_distance, (int, float)) and self.relative_initial_distance >= 0):
            raise ValueError(f"{owner}: relative_initial_distance={self.relative_initial_distance!r} must be a "
                             "number >= 0 (0: start at initial_distance).")
        base.as_decays(owner, "distance_decay", [self.distance_decay])
        for field in ("lr", "eps", "input_clip", "update_clip"):
            base.check_positive(owner, field, getattr(self, field))
        for field in ("b1", "b2", "factored_decay"):
            base.as_decays(owner, field, [getattr(self, field)])
        base.set_field(self, "extra_decays", base.as_decays(owner, "extra_decays", self.extra_decays))
        if len(self.extra_decays) != 2:
            raise ValueError(f"{owner}: extra_decays={self.extra_decays!r} must hold exactly two decays.")
        base.check_positive_int(owner, "hidden_size", self.hidden_size)
        base.check_positive_int(owner, "schedule_knots", self.schedule_knots)
        for field in ("anchored_direction", "concatenate_tensors"):
            if not isinstance(getattr(self, field), bool):
                raise TypeError(f"{owner}: {field}={getattr(self, field)!r} must be True or False.")
        if self.schedule_knots < 2:
            raise ValueError(f"{owner}: schedule_knots={self.schedule_knots} must be at least 2.")
        if not 0.0 <= self.unknown_horizon_fraction <= 1.0:
            raise ValueError(f"{owner}: unknown_horizon_fraction={self.unknown_horizon_fraction!r} "
                             "must be in [0, 1].")

    # -- sizes -------------------------------------------------------------------------

    def flops_per_param(self) -> int:
        """Approximate FLOPs per parameter of one update (features, network, update)."""
        h = self.hidden_size
        network = 2 * (NUM_PARAM_INPUTS * h + h * h + 2 * h) + 2 * h
        anchor = 2 * (h + h * h + h) + 2 * h + 1 if self.anchored_direction else 0
        return network + anchor + 60 + (6 if self.step_size == "distance" else 0)

    def state_bytes_per_param(self) -> int:
        """Bytes of optimizer state per parameter (three momenta, one second moment; with
        ``step_size="distance"`` also the gradient sum and the initial parameters), at
        :attr:`state_dtype`.

        Example:
            >>> NominalLOpt(step_size="distance").state_bytes_per_param()
            24
            >>> NominalLOpt(step_size="distance", state_dtype="bfloat16").state_bytes_per_param()
            12
        """
        per_entry = SR.storage_dtype(type(self).__name__, self.state_dtype).itemsize
        return per_entry * (6 if self.step_size == "distance" else 4)

    @property
    def decays(self) -> tuple[float, ...]:
        """Momentum decays: the nominal ``b1`` first, then :attr:`extra_decays`."""
        return (self.b1, *self.extra_decays)

    # -- theta ---------------------------------------------------------------------------

    def init(self, key: jax.Array) -> dict[str, Any]:
        """theta: the network (last layer zero), schedule knots, tensor multipliers, log lr."""
        h = self.hidden_size
        k0, k1, k2 = jax.random.split(key, 3)

        def glorot(k, fan_in, fan_out):
            return jax.random.normal(k, (fan_in, fan_out), _f32) * math.sqrt(2.0 / (fan_in + fan_out))

        network = {
            "w0": glorot(k0, NUM_PARAM_INPUTS, h), "b0": jnp.zeros((h,), _f32),
            "w_context": glorot(k1, NUM_CONTEXT_INPUTS, h) * 0.1,
            "w1": glorot(k2, h, h), "b1": jnp.zeros((h,), _f32),
            "w2": jnp.zeros((h, 2), _f32), "b2": jnp.zeros((2,), _f32),
        }
        return {
            "network": network,
            "log_lr": jnp.asarray(math.log(self.lr), _f32),
            "schedule": jnp.zeros((self.schedule_knots,), _f32),
            "log_tensor_mult": jnp.zeros((2,), _f32),  # [vectors and scalars, matrices and kernels]
            "mup_exponent": jnp.zeros((), _f32),
        }

    def learning_rate(self, theta: dict[str, Any], fraction: jax.Array) -> jax.Array:
        """The base step size ``lr * exp(schedule(fraction))`` (before tensor multipliers).

        Example:
            >>> import jax
            >>> lopt_ = NominalLOpt()
            >>> round(float(lopt_.learning_rate(lopt_.init(jax.random.key(0)), 0.5)), 6)
            0.001
        """
        # Linear interpolation between evenly spaced knots on [0, 1], as hat-function weights: no
        # search, so no loop (jnp.interp's searchsorted compiles to a 4-trip while loop that the
        # GPU runs as separate launches with a host round trip per trip, in every optimizer step)
        position = jnp.clip(jnp.asarray(fraction, _f32), 0.0, 1.0) * (self.schedule_knots - 1)
        knots = jnp.arange(self.schedule_knots, dtype=_f32)
        weights = jnp.maximum(0.0, 1.0 - jnp.abs(position[..., None] - knots))
        return jnp.exp(theta["log_lr"] + jnp.sum(weights * theta["schedule"], axis=-1))

    # -- the update -----------------------------------------------------------------------

    def _build(self, theta: Any, num_steps: Any, leaf_offset: int = 0) -> base.Transform:
        """The transformation (``leaf_offset``: the position of the first leaf in the whole tree, for
        the stochastic rounding's salts when a kernel hands this path single tensors)."""
        from lopt import kernels  # lazy: lopt.kernels imports lopt.learned
        from lopt.kernels import nominal_step as kernels_nominal

        decays = jnp.asarray(self.decays, _f32)
        net = theta["network"]
        clip = self.input_clip
        stored = SR.storage_dtype(type(self).__name__, self.state_dtype)

        def init(params):
            zeros = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), stored), params)
            distance = None
            if self.step_size == "distance":
                distance = D.init(params, initial=self.initial_distance, relative=self.relative_initial_distance)
                distance = distance._replace(grad_sum=_cast(distance.grad_sum, stored),
                                             params0=_cast(distance.params0, stored))
            return NominalState(jnp.zeros((), jnp.int32), _cast(F.momentum_init(params, len(decays)), stored),
                                zeros, F.factored_init(params, 1), distance)

        def update(grads, state, params, loss, valid_loss):
            del loss, valid_loss
            interpret = kernels.resolve(kernels_nominal.supported(self), self.kernel)
            if interpret is not None:  # the fused Pallas step (lopt.kernels), same result
                cfg = dataclasses.replace(kernels_nominal.DEFAULT_CONFIG, network=self.kernel_precision)
                return kernels_nominal.nominal_update(self, theta, num_steps, grads, state, params,
                                                      interpret=interpret, cfg=cfg)
            stored_state, state = state, _widen(state)  # the step computes in float32
            count = state.count + 1
            t = count.astype(_f32)
            momentum = F.momentum_update(state.momentum, grads, decays)
            rms = jax.tree.map(lambda v, g: self.b2 * v + (1 - self.b2) * jnp.square(g.astype(_f32)),
                               state.rms, grads)
            factored, fac_g = F.factored_update(state.factored, grads, [self.factored_decay])
            if num_steps is None:
                fraction = jnp.asarray(self.unknown_horizon_fraction, _f32)
            else:
                fraction = jnp.clip((t - 1.0) / num_steps, 0.0, 1.0)
            lr = self.learning_rate(theta, fraction)
            distance = state.distance
            if distance is not None:  # this step uses the current estimate; the next one the updated
                step_distance = distance.distance
                distance = D.update(distance, grads, params, weight=jnp.square(step_distance) * lr,
                                    decay=self.distance_decay)
                lr = lr * step_distance
            # A non-finite new entry of a per-entry accumulator keeps its old value, and the step
            # reads the kept values, so the old state is read once, by the fusion that writes the
            # new one in its place. Read raw, the accumulators were fused into the network's
            # kernels, which read the old state after its buffers could be overwritten, and XLA
            # copied every one first (stop 56, CPU, a donated step on 2M parameters in 8 layers,
            # `python benchmarks/xla_step_copies.py`: 75 copies of 40.1 MB -> 35 of 8.0 MB, the
            # params; 21.5 -> 9.6 ms with the gradient sum still copied). The distance step's
            # gradient sum is kept the same way (lopt.learned.distance.update). Where g**2 is not finite (NaN,
            # inf, |g| > 1.8e19: the entries whose accumulators may not be) the update is 0, as NaN
            # and inf made it before.
            momentum = jax.tree.map(base.keep_finite, momentum, state.momentum)
            rms = jax.tree.map(base.keep_finite, rms, state.rms)
            time_context = F.fraction_embedding(fraction)
            m_correction = 1.0 / (1.0 - decays ** t)
            v_correction = 1.0 / (1.0 - self.b2 ** t)

            flat_g, treedef = jax.tree.flatten(grads)
            flat = [treedef.flatten_up_to(tree) for tree in (params, momentum, rms, fac_g)]
            # per tensor: the clipped inputs, the first layer's bias (with context) and the multiplier
            tensors = []
            for g, p, m, v, fg in zip(flat_g, *flat):
                shape = g.shape
                g = g.astype(_f32)
                p = p.astype(_f32)
                precond = 1.0 / (jnp.sqrt(v * v_correction) + self.eps)
                moments = [m[..., k] * m_correction[k] * precond for k in range(len(self.decays))]
                # + 1e-30 inside the root: the same value in float32, and a finite derivative at a
                # zero tensor (zero-initialised biases), where sqrt's is infinite and makes every
                # derivative through the step (jvp, backprop through the unroll) NaN
                p_rms = jnp.sqrt(jnp.mean(jnp.square(p)) + 1e-30) if p.size else jnp.zeros((), _f32)
                inputs = [g * precond, *moments, fg[..., 0], p / (p_rms + 1e-8)]
                inputs = [jnp.clip(x, -clip, clip) for x in inputs]
                tensors.append((inputs, moments[0], _first_layer_bias(net, time_context, shape),
                                lr * _tensor_multiplier(theta, shape)))
            if self.concatenate_tensors and len(tensors) > 1:
                steps = self._steps_concatenated(net, tensors, [g.shape for g in flat_g])
            else:
                steps = [self._step(net, *tensor) for tensor in tensors]
            steps = [jnp.where(jnp.isfinite(jnp.square(g.astype(_f32))), step, 0.0).astype(step.dtype)
                     for g, step in zip(flat_g, steps)]
            new = NominalState(count, momentum, rms, factored, distance)
            if self.state_dtype == "bfloat16":
                new = _round_state(new, treedef, leaf_offset)
            # the per-entry accumulators are kept above (a kept bfloat16 entry rounds to itself):
            # masked against themselves, which selects nothing
            kept = new._replace(count=stored_state.count, factored=stored_state.factored)
            if distance is not None:
                kept = kept._replace(distance=new.distance._replace(
                    distance=stored_state.distance.distance, numerator=stored_state.distance.numerator))
            return base.mask_non_finite(treedef.unflatten(steps), new, kept)

        return base.Transform(init, update, masked=True)  # both paths mask (the kernel in its pass)

    def _step(self, net: dict, inputs: list, nominal: jax.Array, bias: Any, step_size: Any) -> jax.Array:
        """The network and the step on one set of entries.

        ``nominal`` is Adam's bias-corrected direction, ``bias`` the first layer's bias (``[h]``, or
        ``[entries, h]``), ``step_size`` the learning rate times the tensor multiplier (a scalar, or
        one per entry).
        """
        direction, log_scale = self._network(net, inputs, net["w0"], bias)
        if self.anchored_direction:  # the gradient inputs at zero: only the parameter input is left
            direction = direction - self._network(net, inputs[-1:], net["w0"][-1:], bias)[0]
        combined = jnp.clip(nominal + direction, -self.update_clip, self.update_clip)
        return -step_size * combined * jnp.exp(jnp.clip(log_scale, -4.0, 4.0))

    def _network(self, net: dict, inputs: list, w0: jax.Array, bias: Any) -> list[jax.Array]:
        """``[direction, log_scale]`` from ``inputs`` (``w0``: the first layer's rows for them)."""
        hidden = [jax.nn.relu(x + b) for x, b in zip(_dense(inputs, w0, jnp.zeros_like(net["b0"])),
                                                     [bias[..., j] for j in range(self.hidden_size)])]
        hidden = [jax.nn.relu(x) for x in _dense(hidden, net["w1"], net["b1"])]
        return _dense(hidden, net["w2"], net["b2"])

    def _steps_concatenated(self, net: dict, tensors: list, shapes: list) -> list[jax.Array]:
        """:meth:`_step` once over every tensor's entries joined into one vector (one copy of the network)."""
        sizes = [int(np.prod(shape)) for shape in shapes]
        inputs = [jnp.concatenate([t[0][i].reshape(-1) for t in tensors]) for i in range(NUM_PARAM_INPUTS)]
        nominal = jnp.concatenate([t[1].reshape(-1) for t in tensors])
        bias = jnp.concatenate([jnp.broadcast_to(t[2], (n, self.hidden_size)) for t, n in zip(tensors, sizes)])
        step_size = jnp.concatenate([jnp.broadcast_to(t[3], (n,)) for t, n in zip(tensors, sizes)])
        flat = self._step(net, inputs, nominal, bias, step_size)
        offsets = np.cumsum([0] + sizes)
        return [flat[a:b].reshape(shape) for a, b, shape in zip(offsets[:-1], offsets[1:], shapes)]

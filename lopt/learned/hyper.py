"""VeLO-style hypernetwork learned optimizer (Metz et al. 2022).

"VeLO: Training versatile learned optimizers by scaling up" (Metz, Harrison, Freeman,
Merchant, Beyer, Bradbury, Agrawal, Poole, Mordatch, Roberts, Sohl-Dickstein; arXiv
2211.09760). A per-tensor LSTM produces, for each tensor, the weights of a tiny
per-parameter MLP (as a mixture of a learned bank of weight sets) and a step-size
multiplier. Steps are relative to the tensor's parameter scale, and the LSTM knows how
far through training it is, so the optimizer needs the horizon (``num_steps``).

Per step:

1. Gradients are clipped to [-1000, 1000]; the loss updates running averages at 10
   horizons (half-lives log-spaced from 10 steps to ``num_steps``); momenta, second
   moments and Adafactor-style factored second moments are updated.
2. Per tensor (28 inputs by default): 9 fraction-of-training features, 9 loss features
   (each running average relative to its running minimum), log variance of each momentum,
   log mean and variance of each second moment (all after dividing the tensor by its
   parameter scale), and a one-hot of the tensor's rank. Tensors exchange information
   through a max over tensors of a projected copy of these inputs (deep-sets mixing).
3. A per-tensor LSTM maps these to ``param_inits`` mixing coefficients ``c`` and a step
   multiplier ``lr_mult``. The tensor's MLP weights are ``100 * mean_i(c_i * bank_i)``.
4. Per parameter (30 inputs by default, each normalised within the tensor): gradient,
   clipped gradient, parameter, momenta, second moments, ``m * rsqrt(v)``, ``rsqrt(v)``,
   the Adafactor-normalised gradient, ``g * rsqrt(v)``, factored row and column second
   moments and their rsqrt, and the momenta normalised by the factored second moment.
5. The MLP (``ff_hidden_layers`` x ``ff_hidden_size``) outputs a direction ``d`` and
   log-magnitude ``s``; the update is
   ``-d * exp(s * exp_mult) * step_mult * lr_mult * rms(p)`` (relative to the tensor's
   parameter scale ``rms(p)``).

Default config cost per parameter: 4 float32 accumulators for matrices (16 bytes; the
factored accumulators are per row/column), 7 for vectors and scalars (28 bytes); about
0.45 kFLOPs (30x4 + 4x4 + 4x2 multiply-adds, plus features). Per tensor: one LSTM step
(128 units) and the mixing of the weight bank.

Differences from the released VeLO: the third (unused) MLP output is dropped, the
LSTM reads the accumulators after this step's update, the per-tensor mixing uses one
projection (VeLO computes a second one and discards it), the second-moment variance uses
its own mean, and the control/step heads are initialised so that a fresh theta makes
steps of about 1e-3 of the parameter scale.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from lopt.learned import HyperLOpt
    >>> lopt_ = HyperLOpt(lstm_hidden_size=16, param_inits=8)
    >>> opt = lopt_.optimizer(lopt_.init(jax.random.key(0)), num_steps=1000)
    >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
    >>> state = opt.init(params)
    >>> updates, state = opt.update(params, state, params, loss=1.0)
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lopt.learned import base, nn
from lopt.learned import features as F

__all__ = ["HyperLOpt", "HyperState"]

_f32 = jnp.float32
_MAX_RANK = 5
_NUM_HORIZONS = 10


class HyperState(NamedTuple):
    """State of :class:`HyperLOpt`.

    Attributes:
        count: steps taken.
        momentum: per-leaf momenta ``(*p.shape, k_m)``.
        rms: per-leaf second moments ``(*p.shape, k_r)``.
        factored: per-leaf :class:`lopt.learned.features.FactoredAccumulator`.
        lstm: per-tensor LSTM state, ``[n_tensors, lstm_hidden_size]`` each.
        loss_buffer: running loss averages (:class:`~lopt.learned.features.LossBufferState`).
    """

    count: jax.Array
    momentum: Any
    rms: Any
    factored: Any
    lstm: nn.LSTMState
    loss_buffer: F.LossBufferState


@dataclasses.dataclass(frozen=True)
class HyperLOpt(base.LearnedOptimizer):
    """Per-tensor LSTM that mixes a bank of per-parameter MLP weights (VeLO-style).

    Attributes:
        lstm_hidden_size: width of the per-tensor LSTM (VeLO: 512).
        ff_hidden_size: width of the per-parameter MLP (VeLO: 4).
        ff_hidden_layers: hidden layers of the per-parameter MLP (VeLO: 2).
        param_inits: size of the bank of MLP weight sets (VeLO: 256).
        momentum_decays: momentum accumulator decays.
        rms_decays: second-moment accumulator decays.
        adafactor_decays: factored second-moment accumulator decays; must have as many
            entries as ``momentum_decays``.
        mix_layers: let tensors see each other through a max over tensors.
        exp_mult: multiplier of the log-magnitude output inside ``exp``.
        step_mult: overall step scale (relative to the parameter scale).

    Example:
        >>> HyperLOpt().num_param_inputs, HyperLOpt().num_tensor_inputs
        (30, 28)
    """

    name: ClassVar[str] = "hyper"
    needs_loss: ClassVar[bool] = True
    needs_params: ClassVar[bool] = True
    needs_num_steps: ClassVar[bool] = True

    lstm_hidden_size: int = 128
    ff_hidden_size: int = 4
    ff_hidden_layers: int = 2
    param_inits: int = 64
    momentum_decays: tuple[float, ...] = (0.9, 0.99, 0.999)
    rms_decays: tuple[float, ...] = (0.999,)
    adafactor_decays: tuple[float, ...] = (0.9, 0.99, 0.999)
    mix_layers: bool = True
    exp_mult: float = 1e-3
    step_mult: float = 1e-3

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for f in ("lstm_hidden_size", "ff_hidden_size", "param_inits"):
            base.check_positive_int(owner, f, getattr(self, f))
        if (
            isinstance(self.ff_hidden_layers, bool)
            or not isinstance(self.ff_hidden_layers, int)
            or (self.ff_hidden_layers < 0)
        ):
            raise ValueError(
                f"{owner}: ff_hidden_layers={self.ff_hidden_layers!r} must be an int >= 0."
            )
        for f in ("momentum_decays", "rms_decays", "adafactor_decays"):
            base.set_field(self, f, base.as_decays(owner, f, getattr(self, f)))
        if len(self.adafactor_decays) != len(self.momentum_decays):
            raise ValueError(
                f"{owner}: adafactor_decays={self.adafactor_decays} must have as many entries "
                f"as momentum_decays={self.momentum_decays} (they are multiplied together)."
            )
        if not isinstance(self.mix_layers, bool):
            raise TypeError(f"{owner}: mix_layers={self.mix_layers!r} must be a bool.")
        base.check_positive(owner, "exp_mult", self.exp_mult)
        base.check_positive(owner, "step_mult", self.step_mult)

    # -- sizes and costs ----------------------------------------------------------------

    @property
    def num_param_inputs(self) -> int:
        km, kr, kf = len(self.momentum_decays), len(self.rms_decays), len(self.adafactor_decays)
        # g, clip g, p, m, v, m*rsqrt(v), rsqrt(v), fac_g, g*rsqrt(v), 5 factored features
        return 3 + km + kr + km * kr + kr + kf + kr + 5 * kf

    @property
    def num_tensor_inputs(self) -> int:
        km, kr = len(self.momentum_decays), len(self.rms_decays)
        return len(F.FRACTION_POINTS) + (_NUM_HORIZONS - 1) + km + 2 * kr + _MAX_RANK

    def ff_sizes(self) -> list[int]:
        return [self.num_param_inputs] + [self.ff_hidden_size] * self.ff_hidden_layers + [2]

    def flops_per_param(self) -> int:
        """Approximate FLOPs per parameter of one update (MLP + features + accumulators)."""
        km, kr, kf = len(self.momentum_decays), len(self.rms_decays), len(self.adafactor_decays)
        accum = 3 * km + 4 * kr + 6 * kf
        feats = 4 * self.num_param_inputs + 2 * km * kr + 4 * kf + 10
        return nn.mlp_flops(self.ff_sizes()) + accum + feats

    def state_bytes_per_param(self) -> int:
        """Bytes per parameter of a large matrix (factored accumulators are per row/col)."""
        return 4 * (len(self.momentum_decays) + len(self.rms_decays))

    # -- theta -----------------------------------------------------------------------

    def init(self, key: jax.Array) -> dict[str, Any]:
        """Samples theta: mixing layers, LSTM, control/step heads and the MLP bank."""
        k = jax.random.split(key, 7)
        h, n_in, P = self.lstm_hidden_size, self.num_tensor_inputs, self.param_inits
        # Mixing coefficients of std ~ sqrt(P)/100 make the mixed MLP weights about as
        # large as one bank member's (see `_build`).
        c_std = P**0.5 / 100.0
        theta = {
            "lstm": nn.lstm_init(k[0], h if self.mix_layers else n_in, h),
            "to_controls": {
                "w": nn.dense_init(k[1], h, P, scale=2.0 * c_std)["w"],
                "b": c_std * jax.random.normal(k[2], (P,), _f32),
            },
            "to_step": nn.dense_init(k[3], h, 1, scale=0.01, bias=1.0),
            "bank": jax.vmap(lambda kk: nn.mlp_init(kk, self.ff_sizes()))(
                jax.random.split(k[4], P)
            ),
        }
        if self.mix_layers:
            theta["mix_in"] = nn.dense_init(k[5], n_in, h)
            theta["mix_gate"] = nn.dense_init(k[6], n_in, h)
        return theta

    # -- transformation ------------------------------------------------------------------

    def _tensor_inputs(self, mean, msq, shape, frac_feat, loss_feat) -> jax.Array:
        """LSTM inputs of one tensor from its per-feature moments (see `_param_inputs`).

        Momenta and second moments are measured relative to the parameter scale.
        """
        km, kr = len(self.momentum_decays), len(self.rms_decays)
        m_cols, v_cols = slice(3, 3 + km), slice(3 + km, 3 + km + kr)
        inv_p2 = 1.0 / jnp.maximum(1e-9, msq[2])  # 1 / mean(p**2)
        var_m = (msq[m_cols] - jnp.square(mean[m_cols])) * inv_p2
        mean_v = mean[v_cols] * jnp.sqrt(inv_p2)
        var_v = (msq[v_cols] - jnp.square(mean[v_cols])) * inv_p2
        rank = min(int(np.sum(np.asarray(shape) > 1)), _MAX_RANK - 1)
        return jnp.concatenate(
            [
                frac_feat,
                loss_feat,
                0.5 * F.clip_log_abs(var_m, scale=10.0),
                0.5 * F.clip_log_abs(mean_v, scale=10.0),
                0.5 * F.clip_log_abs(var_v, scale=10.0),
                jax.nn.one_hot(rank, _MAX_RANK, dtype=_f32),
            ]
        )

    def _param_inputs(self, g, p, m, v, fac_g, fac) -> jax.Array:
        g1, p1 = g[..., None], p[..., None]
        r = F.rsqrt(v)
        mr = (m[..., :, None] * r[..., None, :]).reshape(*m.shape[:-1], -1)
        feats = [g1, jnp.clip(g1, -0.1, 0.1), p1, m, v, mr, r, fac_g, g1 * r]
        feats += F.factored_features(fac, m, p.shape)
        return jnp.concatenate(feats, axis=-1)

    def _build(self, theta: Any, num_steps: Any) -> base.Transform:
        km, kr, kf = len(self.momentum_decays), len(self.rms_decays), len(self.adafactor_decays)
        mom_d = jnp.asarray(self.momentum_decays, _f32)
        rms_d = jnp.asarray(self.rms_decays, _f32)
        fac_d = jnp.asarray(self.adafactor_decays, _f32)
        P = self.param_inits

        def init(params):
            n = len(jax.tree.leaves(params))
            return HyperState(
                count=jnp.zeros((), jnp.int32),
                momentum=F.momentum_init(params, km),
                rms=F.rms_init(params, kr),
                factored=F.factored_init(params, kf),
                lstm=nn.lstm_zero_state((n,), self.lstm_hidden_size),
                loss_buffer=F.loss_buffer_init(num_steps, _NUM_HORIZONS),
            )

        def update(grads, state, params, loss, valid_loss):
            del valid_loss
            flat_g, treedef = jax.tree.flatten(grads)
            n_tensors = len(flat_g)
            if state.lstm.h.shape[0] != n_tensors:
                raise ValueError(
                    f"`hyper` state was made for {state.lstm.h.shape[0]} tensors but the "
                    f"grads have {n_tensors}; create it with `opt.init(params)`."
                )
            count = state.count + 1
            if n_tensors == 0:
                return grads, state._replace(count=count)

            loss_buffer = F.loss_buffer_update(state.loss_buffer, loss)
            loss_feat = F.loss_buffer_features(loss_buffer)
            frac_feat = F.fraction_embedding(state.count.astype(_f32) / num_steps)

            flat_g = [jnp.clip(g.astype(_f32), -1000.0, 1000.0) for g in flat_g]
            clipped = treedef.unflatten(flat_g)
            momentum = F.momentum_update(state.momentum, clipped, mom_d)
            rms = F.rms_update(state.rms, clipped, rms_d)
            factored, fac_g = F.factored_update(state.factored, clipped, fac_d)
            flat_p = [p.astype(_f32) for p in treedef.flatten_up_to(params)]
            flat_m = treedef.flatten_up_to(momentum)
            flat_v = treedef.flatten_up_to(rms)
            flat_fg = treedef.flatten_up_to(fac_g)
            flat_fac = treedef.flatten_up_to(factored)

            # Per-parameter features of each tensor and their moments over the tensor.
            feats, moments = [], []
            for g, p, m, v, fg, fac in zip(flat_g, flat_p, flat_m, flat_v, flat_fg, flat_fac):
                x = self._param_inputs(g, p, m, v, fg, fac)
                feats.append(x)
                moments.append(F.tensor_moments(x))

            # Per-tensor LSTM -> mixing coefficients and step multipliers.
            x = jnp.stack(
                [
                    self._tensor_inputs(mean, msq, p.shape, frac_feat, loss_feat)
                    for p, (mean, msq) in zip(flat_p, moments)
                ]
            )
            if self.mix_layers:
                mixed = jax.nn.relu(nn.dense_apply(theta["mix_gate"], x))
                x = nn.dense_apply(theta["mix_in"], x) + jnp.max(mixed, axis=0, keepdims=True)
            lstm_out, lstm_state = nn.lstm_apply(theta["lstm"], x, state.lstm)
            controls = nn.dense_apply(theta["to_controls"], lstm_out)  # [n_tensors, P]
            lr_mult = nn.dense_apply(theta["to_step"], lstm_out)[:, 0]  # [n_tensors]
            # Each tensor's MLP weights: 100 * mean_i(c_i * bank_i).
            nets = jax.tree.map(
                lambda b: jnp.einsum("tp,p...->t...", controls, b) * (100.0 / P), theta["bank"]
            )

            updates = []
            for i, (x, (_, msq)) in enumerate(zip(feats, moments)):
                xp = F.second_moment_normalize(x, mean_sq=msq)
                out = nn.mlp_apply(jax.tree.map(lambda w, i=i: w[i], nets), xp)
                param_scale = jnp.sqrt(msq[2] + 1e-9)
                step = (
                    out[..., 0]
                    * jnp.exp(out[..., 1] * self.exp_mult)
                    * (self.step_mult * param_scale * lr_mult[i])
                )
                updates.append(-step)

            new_state = HyperState(count, momentum, rms, factored, lstm_state, loss_buffer)
            return treedef.unflatten(updates), new_state

        return base.Transform(init, update)

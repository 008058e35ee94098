"""Hierarchical learned optimizer: per-tensor LSTM + per-parameter MLP (Metz et al. 2020).

"Tasks, stability, architecture, and compute: training more effective learned optimizers,
and using them to train themselves" (Metz, Maheswaranathan, Freeman, Poole,
Sohl-Dickstein; arXiv 2009.11243). A per-tensor LSTM reads tensor-level statistics and
the normalised training and validation losses, and sends per-tensor context to a
per-parameter MLP, which sends a summary back. Because the LSTM sees the validation loss
it can regularise dynamically (e.g. shrink steps or decay weights when the validation
loss rises while the training loss falls).

Per step:

1. The losses are normalised by running statistics: ``loss`` by the training loss's
   mean/std, the running mean of ``valid_loss`` by the same training statistics.
2. Gradients are clipped to ``clip_mult`` times a running average of their RMS.
3. Momenta and second moments at ``decays`` are updated.
4. Per tensor, the LSTM input is 18 statistics (log-magnitude and sign of the mean
   momentum, second moment and parameter, their log variances, the log norms of the
   parameter and gradient, is-scalar, 4 log-shape features, training- and validation-loss
   features and whether a validation loss has been seen), the MLP's summary of that
   tensor from the previous step, and a summary of all tensors' LSTM outputs from the
   previous step (the mean of a projection: how tensors see each other).
5. Per parameter, the MLP input is 3 + 4k features normalised within the tensor
   (gradient, parameter, log|parameter|, and per decay: momentum, second moment,
   momentum * rsqrt(second moment), rsqrt(second moment)), plus per-tensor context:
   11 time features, log number of tensors, log parameter norm, log tensor size and a
   projection of the tensor's LSTM output.
6. The MLP outputs a direction ``d``, a log-magnitude ``s`` and ``from_mlp_size`` values
   whose mean over the tensor goes back to the LSTM. The update is
   ``-d * exp(s * exp_mult) * step_mult``.

Default config cost per parameter: 10 float32 accumulators (40 bytes); about 4.9 kFLOPs
(MLP 23x32 + 32x32 + 32x18 multiply-adds per parameter; the context part of the first
layer is computed once per tensor). Per tensor: a 64-unit LSTM step.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from lopt.learned import HierarchicalLOpt
    >>> lopt_ = HierarchicalLOpt()
    >>> opt = lopt_.optimizer(lopt_.init(jax.random.key(0)))
    >>> params = {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}
    >>> state = opt.init(params)
    >>> updates, state = opt.update(params, state, params, loss=2.0, valid_loss=2.5)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from lopt.learned import base, nn
from lopt.learned import features as F

__all__ = ["HierarchicalLOpt", "HierarchicalState"]

_f32 = jnp.float32
_NUM_TENSOR_STATS = 18


class HierarchicalState(NamedTuple):
    """State of :class:`HierarchicalLOpt`.

    Attributes:
        count: steps taken.
        momentum: per-leaf momenta ``(*p.shape, k)``.
        rms: per-leaf second moments ``(*p.shape, k)``.
        lstm: per-tensor LSTM state, ``[n_tensors, lstm_hidden_size]`` each.
        from_mlp: per-tensor summary from the MLP, ``[n_tensors, from_mlp_size]``.
        from_lstm: summary of all tensors, ``[from_lstm_size]``.
        train_loss: running statistics of the training loss.
        valid_loss: running statistics of the validation loss.
        clip: running RMS of the gradient, for dynamic clipping.
    """

    count: jax.Array
    momentum: Any
    rms: Any
    lstm: nn.LSTMState
    from_mlp: jax.Array
    from_lstm: jax.Array
    train_loss: F.LossNormalizerState
    valid_loss: F.LossNormalizerState
    clip: jax.Array


@dataclasses.dataclass(frozen=True)
class HierarchicalLOpt(base.LearnedOptimizer):
    """Per-tensor LSTM feeding a per-parameter MLP; reads training and validation loss.

    Attributes:
        hidden_size: width of the per-parameter MLP.
        hidden_layers: hidden layers of the per-parameter MLP.
        decays: decays of the momentum and second-moment accumulators.
        lstm_hidden_size: width of the per-tensor LSTM.
        from_mlp_size: size of the MLP -> LSTM summary.
        from_lstm_size: size of the all-tensors summary fed back to the LSTM.
        lstm_to_ff: size of the LSTM -> MLP context.
        time_scales: timescales of the tanh step embedding.
        exp_mult: multiplier of the log-magnitude output inside ``exp``.
        step_mult: overall step scale.
        train_loss_decay: EMA decay of the training-loss statistics.
        valid_loss_decay: EMA decay of the validation-loss statistics.
        clip_decay: EMA decay of the gradient RMS used for clipping.
        clip_mult: gradients are clipped to ``clip_mult`` times the running RMS.

    Example:
        >>> HierarchicalLOpt().num_mlp_inputs
        54
    """

    name: ClassVar[str] = "hierarchical"
    needs_loss: ClassVar[bool] = True
    needs_params: ClassVar[bool] = True
    reads_valid_loss: ClassVar[bool] = True

    hidden_size: int = 32
    hidden_layers: int = 2
    decays: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999, 0.9999)
    lstm_hidden_size: int = 64
    from_mlp_size: int = 16
    from_lstm_size: int = 18
    lstm_to_ff: int = 17
    time_scales: tuple[float, ...] = F.TIME_SCALES
    exp_mult: float = 1e-3
    step_mult: float = 1e-3
    train_loss_decay: float = 0.9
    valid_loss_decay: float = 0.95
    clip_decay: float = 0.99
    clip_mult: float = 10.0

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for f in (
            "hidden_size",
            "lstm_hidden_size",
            "from_mlp_size",
            "from_lstm_size",
            "lstm_to_ff",
        ):
            base.check_positive_int(owner, f, getattr(self, f))
        if (
            isinstance(self.hidden_layers, bool)
            or not isinstance(self.hidden_layers, int)
            or (self.hidden_layers < 0)
        ):
            raise ValueError(f"{owner}: hidden_layers={self.hidden_layers!r} must be an int >= 0.")
        base.set_field(self, "decays", base.as_decays(owner, "decays", self.decays))
        base.set_field(self, "time_scales", tuple(float(s) for s in self.time_scales))
        for f in ("exp_mult", "step_mult", "clip_mult"):
            base.check_positive(owner, f, getattr(self, f))
        base.as_decays(
            owner,
            "train_loss_decay/valid_loss_decay/clip_decay",
            [self.train_loss_decay, self.valid_loss_decay, self.clip_decay],
        )

    # -- sizes and costs ----------------------------------------------------------------

    @property
    def num_param_inputs(self) -> int:
        """Per-parameter (normalised) MLP inputs."""
        return 3 + 4 * len(self.decays)

    @property
    def num_context_inputs(self) -> int:
        """Per-tensor MLP inputs: time, log #tensors, log norm, log size, LSTM context."""
        return len(self.time_scales) + 3 + self.lstm_to_ff

    @property
    def num_mlp_inputs(self) -> int:
        return self.num_param_inputs + self.num_context_inputs

    @property
    def num_lstm_inputs(self) -> int:
        return _NUM_TENSOR_STATS + self.from_mlp_size + self.from_lstm_size

    def mlp_sizes(self) -> list[int]:
        out = 2 + self.from_mlp_size
        return [self.num_mlp_inputs] + [self.hidden_size] * self.hidden_layers + [out]

    def flops_per_param(self) -> int:
        """Approximate FLOPs per parameter of one update (MLP + features + reductions)."""
        k = len(self.decays)
        feats = 8 * k + 4 * self.num_param_inputs + 30
        mlp = nn.mlp_flops(self.mlp_sizes(), self.num_context_inputs)
        return mlp + feats + 2 * self.from_mlp_size

    def state_bytes_per_param(self) -> int:
        return 4 * 2 * len(self.decays)

    # -- theta -----------------------------------------------------------------------

    def init(self, key: jax.Array) -> dict[str, Any]:
        """Samples theta: LSTM, its two projections, the MLP and initial summaries."""
        k = jax.random.split(key, 6)
        return {
            "lstm": nn.lstm_init(k[0], self.num_lstm_inputs, self.lstm_hidden_size),
            "lstm_to_ff": nn.dense_init(k[1], self.lstm_hidden_size, self.lstm_to_ff),
            "lstm_to_lstm": nn.dense_init(k[2], self.lstm_hidden_size, self.from_lstm_size),
            "mlp": nn.mlp_init(k[3], self.mlp_sizes()),
            "initial_from_mlp": 0.1 * jax.random.normal(k[4], (self.from_mlp_size,), _f32),
            "initial_from_lstm": 0.1 * jax.random.normal(k[5], (self.from_lstm_size,), _f32),
        }

    # -- transformation ------------------------------------------------------------------

    def _tensor_stats(self, size, mean, msq, train_feat, valid_feat, has_valid, shape):
        """The 18 LSTM inputs of one tensor, from its per-feature moments."""
        k = len(self.decays)
        m_cols, v_cols = slice(3, 3 + k), slice(3 + k, 3 + 2 * k)
        mean_m = jnp.mean(mean[m_cols])
        var_m = jnp.mean(msq[m_cols]) - jnp.square(mean_m)
        mean_v = jnp.mean(mean[v_cols])
        var_v = jnp.mean(msq[v_cols]) - jnp.square(mean_v)
        mean_p = mean[1]
        var_p = msq[1] - jnp.square(mean_p)
        norm_p = jnp.sqrt(size * msq[1] + 1e-16)
        norm_g = jnp.sqrt(size * msq[0] + 1e-16)
        magnitudes = jnp.stack([mean_m, var_m, mean_v, var_v, mean_p, var_p, norm_p, norm_g])
        stats = [
            F.clip_log_abs(magnitudes),
            jnp.sign(jnp.stack([mean_m, mean_p])),
            jnp.stack([train_feat, valid_feat, has_valid]),
            jnp.asarray([1.0 if len(shape) == 0 else -1.0], _f32),
            F.shape_features(shape),
        ]
        return jnp.concatenate(stats)

    def _build(self, theta: Any, num_steps: Any) -> base.Transform:
        del num_steps
        decays = jnp.asarray(self.decays, _f32)
        k = len(self.decays)

        def init(params):
            n = len(jax.tree.leaves(params))
            return HierarchicalState(
                count=jnp.zeros((), jnp.int32),
                momentum=F.momentum_init(params, k),
                rms=F.rms_init(params, k),
                lstm=nn.lstm_zero_state((n,), self.lstm_hidden_size),
                from_mlp=jnp.tile(theta["initial_from_mlp"], (n, 1)),
                # A copy: donating the state must not delete theta's buffer.
                from_lstm=jnp.array(theta["initial_from_lstm"], copy=True),
                train_loss=F.loss_normalizer_init(),
                valid_loss=F.loss_normalizer_init(),
                clip=jnp.asarray(1.0 - self.clip_decay, _f32),
            )

        def update(grads, state, params, loss, valid_loss):
            flat_g, treedef = jax.tree.flatten(grads)
            n_tensors = len(flat_g)
            if state.from_mlp.shape[0] != n_tensors:
                raise ValueError(
                    f"`hierarchical` state was made for {state.from_mlp.shape[0]} tensors but "
                    f"the grads have {n_tensors}; create it with `opt.init(params)`."
                )
            count = state.count + 1
            if n_tensors == 0:
                return grads, state._replace(count=count)

            # 1. Loss features.
            train_stats = F.loss_normalizer_update(state.train_loss, loss, self.train_loss_decay)
            train_feat = F.loss_normalizer_feature(train_stats, loss, self.train_loss_decay)
            valid_stats = state.valid_loss
            if valid_loss is not None:
                valid_stats = F.loss_normalizer_update(
                    valid_stats, valid_loss, self.valid_loss_decay
                )
            has_valid = valid_stats.count > 0
            valid_mean = F.loss_normalizer_mean(valid_stats, self.valid_loss_decay)
            valid_feat = jnp.where(
                has_valid,
                F.loss_normalizer_feature(train_stats, valid_mean, self.train_loss_decay),
                0.0,
            )
            has_valid = has_valid.astype(_f32)

            # 2. Dynamic gradient clipping.
            t = count.astype(_f32)
            clip_to = state.clip / (1.0 - self.clip_decay**t) * self.clip_mult
            flat_g = [jnp.clip(g.astype(_f32), -clip_to, clip_to) for g in flat_g]
            mean_sq = sum(jnp.mean(jnp.square(g)) for g in flat_g) / n_tensors
            new_clip = self.clip_decay * state.clip + (1.0 - self.clip_decay) * jnp.sqrt(
                1e-8 + mean_sq
            )
            clipped = treedef.unflatten(flat_g)

            # 3. Accumulators.
            momentum = F.momentum_update(state.momentum, clipped, decays)
            rms = F.rms_update(state.rms, clipped, decays)
            flat_p = [p.astype(_f32) for p in treedef.flatten_up_to(params)]
            flat_m = treedef.flatten_up_to(momentum)
            flat_v = treedef.flatten_up_to(rms)

            # Per-parameter features of each tensor and their moments over the tensor
            # (one pass gives both the MLP's normalisation and the LSTM's statistics).
            feats, moments = [], []
            for g, p, m, v in zip(flat_g, flat_p, flat_m, flat_v):
                g1, p1 = g[..., None], p[..., None]
                r = F.rsqrt(v)
                x = jnp.concatenate([g1, p1, jnp.log(jnp.abs(p1) + 1e-8), m, v, m * r, r], -1)
                feats.append(x)
                moments.append(F.tensor_moments(x))

            # 4. Per-tensor LSTM.
            stats = jnp.stack(
                [
                    self._tensor_stats(
                        p.size, mean, msq, train_feat, valid_feat, has_valid, p.shape
                    )
                    for p, (mean, msq) in zip(flat_p, moments)
                ]
            )
            from_lstm = jnp.broadcast_to(state.from_lstm, (n_tensors, self.from_lstm_size))
            lstm_in = jnp.concatenate([stats, state.from_mlp, from_lstm], axis=1)
            lstm_out, lstm_state = nn.lstm_apply(theta["lstm"], lstm_in, state.lstm)
            new_from_lstm = jnp.mean(nn.dense_apply(theta["lstm_to_lstm"], lstm_out), axis=0)
            ff_context = nn.dense_apply(theta["lstm_to_ff"], lstm_out)  # [n_tensors, c]

            # 5. Per-parameter MLP over all tensors at once; per-tensor context enters
            # as a per-tensor first-layer bias.
            net = theta["mlp"]
            n_x = self.num_param_inputs
            time_feat = F.tanh_time_embedding(state.count, self.time_scales)
            log_n_tensors = jnp.asarray(math.log(n_tensors) - 1.0, _f32)
            rows, biases = [], []
            for i, (x, p, (_, msq)) in enumerate(zip(feats, flat_p, moments)):
                rows.append(F.second_moment_normalize(x, mean_sq=msq).reshape(-1, n_x))
                log_norm = 0.5 * jnp.log(p.size * msq[1] + 1e-16)
                log_size = jnp.asarray(math.log(max(p.size, 1)), _f32)
                ctx = jnp.concatenate(
                    [time_feat, jnp.stack([log_n_tensors, log_norm, log_size]), ff_context[i]]
                )
                biases.append(net["b0"] + ctx @ net["w0"][n_x:])
            x = nn.concat_rows(rows)
            bias = nn.concat_rows(
                [jnp.broadcast_to(b, (r.shape[0], b.shape[0])) for b, r in zip(biases, rows)]
            )
            first = {"w0": net["w0"][:n_x], "b0": bias}
            out = nn.mlp_apply({**net, **first}, x)

            # 6. Steps and the summary sent back to the LSTM.
            step = out[:, 0] * jnp.exp(out[:, 1] * self.exp_mult) * self.step_mult
            pieces = nn.split_rows(step, rows)
            updates = treedef.unflatten([-s.reshape(p.shape) for s, p in zip(pieces, flat_p)])
            from_mlp = jnp.stack([jnp.mean(o, axis=0) for o in nn.split_rows(out[:, 2:], rows)])

            new_state = HierarchicalState(
                count=count,
                momentum=momentum,
                rms=rms,
                lstm=lstm_state,
                from_mlp=from_mlp,
                from_lstm=new_from_lstm,
                train_loss=train_stats,
                valid_loss=valid_stats,
                clip=new_clip,
            )
            return updates, new_state

        return base.Transform(init, update)

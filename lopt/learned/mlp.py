"""Per-parameter MLP learned optimizer (Metz et al. 2019).

The learned optimizer of "Understanding and correcting pathologies in the training of
learned optimizers" (Metz, Maheswaranathan, Nixon, Freeman, Sohl-Dickstein; ICML 2019,
arXiv 1810.10180), also known as LOLv2. One small MLP is applied to every parameter.

Inputs per parameter (canonical config, 19 features):

* the gradient ``g``, the parameter value ``p`` and momenta of ``g`` at 6 decays
  (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999) -- 8 features, each divided by its root mean
  square over the tensor (per-tensor second-moment normalisation);
* 11 time features ``tanh(step / s - 1)`` for s in 1, 3, ..., 100000 (the same for every
  parameter, so their contribution to the first layer is computed once per tensor);
* optionally (``fraction_features=True``) 9 fraction-of-training features, which need
  ``num_steps``.

Outputs per parameter: a direction ``d`` and a log-magnitude ``s``; the update is
``-d * exp(s * exp_mult) * step_mult`` with ``exp_mult = step_mult = 1e-3``.

Cost per parameter (canonical config): 6 float32 momenta of state (24 bytes); about
2.8 kFLOPs for the MLP (8x32 + 32x32 + 32x2 multiply-adds) plus ~50 for features.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from lopt.learned import MLPLOpt
    >>> lopt_ = MLPLOpt()
    >>> theta = lopt_.init(jax.random.key(0))
    >>> theta["mlp"]["w0"].shape
    (19, 32)
    >>> opt = lopt_.optimizer(theta)
    >>> params = {"w": jnp.ones((4, 3))}
    >>> state = opt.init(params)
    >>> updates, state = opt.update(params, state, params, loss=1.0)
    >>> updates["w"].shape
    (4, 3)
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from lopt.learned import base, nn
from lopt.learned import features as F
from lopt.learned import stochastic_rounding as SR

__all__ = ["MLPLOpt", "MLPLOptState"]

_f32 = jnp.float32


class MLPLOptState(NamedTuple):
    """State of :class:`MLPLOpt`: step count and momenta ``(*p.shape, n_decays)``."""

    count: jax.Array
    momentum: Any


@dataclasses.dataclass(frozen=True)
class MLPLOpt(base.LearnedOptimizer):
    """Per-parameter MLP on gradient, parameter, momenta and time features.

    Attributes:
        hidden_size: width of the hidden layers.
        hidden_layers: number of hidden layers.
        decays: momentum decays (one momentum accumulator per parameter each).
        time_scales: timescales of the tanh step embedding.
        fraction_features: add fraction-of-training features (requires ``num_steps``).
        exp_mult: multiplier of the log-magnitude output inside ``exp``.
        step_mult: overall step scale.
        state_dtype: ``"float32"``, or ``"bfloat16"`` to store the momenta in half the memory,
            rounded stochastically (:mod:`lopt.learned.stochastic_rounding`; the step computes in
            float32). An execution option: not part of :meth:`config`, the same theta serves either.
        kernel: which implementation this optimizer's steps use (``"auto"``: the fused GPU kernel,
            :mod:`lopt.kernels.mlp_step`; ``"xla"``; ``None``, the default: :mod:`lopt.kernels`'
            global mode). An execution option.
        kernel_precision: the fused kernel's matrix products on GPU: ``"tf32"`` (the default, as
            XLA's float32 products there), ``"bf16"`` (the hidden products' operands rounded to
            bfloat16, float32 accumulation; the first product, 8 wide, stays TF32: update error
            ~4e-3 against float64 instead of ~6e-4; 4.1x Adam's step on an H100 against tf32's
            5.5x, 3.51x with ``state_dtype="bfloat16"``, stop 63), ``"tf32x3"`` or ``"ieee"`` (about
            float32); each launched in two-warp programs of 128 parameters
            (:func:`lopt.kernels.mlp_step.launch_config`). Interpret
            mode computes ``"bf16"`` as the GPU does and the others in float32; the XLA path ignores
            it. An execution option.

    Example:
        >>> MLPLOpt().num_inputs
        19
    """

    name: ClassVar[str] = "mlp"
    needs_params: ClassVar[bool] = True
    execution_options: ClassVar[tuple[str, ...]] = ("state_dtype", "kernel", "kernel_precision")

    hidden_size: int = 32
    hidden_layers: int = 2
    decays: tuple[float, ...] = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)
    time_scales: tuple[float, ...] = F.TIME_SCALES
    fraction_features: bool = False
    exp_mult: float = 1e-3
    step_mult: float = 1e-3
    state_dtype: str = "float32"
    kernel: str | None = None
    kernel_precision: str = "tf32"

    def __post_init__(self) -> None:
        from lopt.kernels import tiles  # lazy: lopt.kernels imports lopt.learned

        owner = type(self).__name__
        SR.storage_dtype(owner, self.state_dtype)
        self._check_kernel_option()
        if self.kernel_precision not in tiles.PRECISIONS:
            raise ValueError(f"{owner}: kernel_precision={self.kernel_precision!r} must be one of "
                             f"{list(tiles.PRECISIONS)}.")
        base.check_positive_int(owner, "hidden_size", self.hidden_size)
        if (
            isinstance(self.hidden_layers, bool)
            or not isinstance(self.hidden_layers, int)
            or (self.hidden_layers < 0)
        ):
            raise ValueError(f"{owner}: hidden_layers={self.hidden_layers!r} must be an int >= 0.")
        base.set_field(self, "decays", base.as_decays(owner, "decays", self.decays))
        if self.state_dtype == "bfloat16" and len(self.decays) > SR.MAX_ROLES:
            raise ValueError(f"{owner}: bfloat16 state rounds at most {SR.MAX_ROLES} momenta; got "
                             f"{len(self.decays)} decays.")
        scales = tuple(float(s) for s in self.time_scales)
        if not all(s > 0 for s in scales):
            raise ValueError(f"{owner}: time_scales={self.time_scales!r} must be positive.")
        base.set_field(self, "time_scales", scales)
        base.check_positive(owner, "exp_mult", self.exp_mult)
        base.check_positive(owner, "step_mult", self.step_mult)

    def requires_num_steps(self) -> bool:
        return self.fraction_features

    @property
    def num_param_inputs(self) -> int:
        """Per-parameter (normalised) inputs: gradient, parameter, momenta."""
        return 2 + len(self.decays)

    @property
    def num_inputs(self) -> int:
        """All MLP inputs, including per-tensor time features."""
        n = self.num_param_inputs + len(self.time_scales)
        return n + (len(F.FRACTION_POINTS) if self.fraction_features else 0)

    def layer_sizes(self) -> list[int]:
        """``[inputs, hidden..., 2]``."""
        return [self.num_inputs] + [self.hidden_size] * self.hidden_layers + [2]

    def flops_per_param(self) -> int:
        """Approximate FLOPs per parameter of one update (MLP + features)."""
        k = len(self.decays)
        feats = 3 * k + 4 * self.num_param_inputs + 8
        return nn.mlp_flops(self.layer_sizes(), self.num_inputs - self.num_param_inputs) + feats

    def state_bytes_per_param(self) -> int:
        """Bytes of optimizer state per parameter (one momentum per decay, at :attr:`state_dtype`).

        Example:
            >>> MLPLOpt().state_bytes_per_param(), MLPLOpt(state_dtype="bfloat16").state_bytes_per_param()
            (24, 12)
        """
        return SR.storage_dtype(type(self).__name__, self.state_dtype).itemsize * len(self.decays)

    def init(self, key: jax.Array) -> dict[str, Any]:
        """Samples theta: ``{"mlp": {"w0": [19, 32], "b0", ..., "w2": [32, 2], "b2"}}``."""
        return {"mlp": nn.mlp_init(key, self.layer_sizes())}

    def _build(self, theta: Any, num_steps: Any) -> base.Transform:
        from lopt import kernels  # lazy: lopt.kernels imports lopt.learned
        from lopt.kernels import mlp_step as kernels_mlp

        decays = jnp.asarray(self.decays, _f32)
        net = theta["mlp"]
        stored = SR.storage_dtype(type(self).__name__, self.state_dtype)

        def init(params):
            momentum = jax.tree.map(lambda m: m.astype(stored), F.momentum_init(params, len(decays)))
            return MLPLOptState(jnp.zeros((), jnp.int32), momentum)

        def update(grads, state, params, loss, valid_loss):
            del loss, valid_loss
            ctx = [F.tanh_time_embedding(state.count, self.time_scales)]
            if self.fraction_features:
                ctx.append(F.fraction_embedding(state.count.astype(_f32) / num_steps))
            context = jnp.concatenate(ctx)
            interpret = kernels.resolve(kernels_mlp.supported(self), self.kernel)
            if interpret is not None:  # the fused Pallas step (lopt.kernels), same result
                updates, momentum = kernels_mlp.mlp_update(
                    self, net, context, grads, state.momentum, params, interpret=interpret,
                    cfg=kernels_mlp.launch_config(self.kernel_precision), step=state.count + 1)
                return updates, MLPLOptState(state.count + 1, momentum)
            momentum = F.momentum_update(jax.tree.map(lambda m: m.astype(_f32), state.momentum), grads, decays)

            # Features per tensor (normalised within the tensor), then one MLP call over
            # the rows of all tensors.
            flat_g, treedef = jax.tree.flatten(grads)
            flat_p = treedef.flatten_up_to(params)
            flat_m = treedef.flatten_up_to(momentum)
            rows = []
            for g, p, m in zip(flat_g, flat_p, flat_m):
                x = jnp.concatenate([g.astype(_f32)[..., None], p.astype(_f32)[..., None], m], -1)
                rows.append(F.second_moment_normalize(x).reshape(-1, x.shape[-1]))
            if self.state_dtype == "bfloat16":  # the features above use the float32 momenta
                count = (state.count + 1).astype(jnp.uint32)
                momentum = treedef.unflatten([SR.round_columns(m, SR.entry_bits(m.shape[:-1], count, i))
                                              for i, m in enumerate(flat_m)])
            if not rows:
                return base.mask_non_finite(grads, MLPLOptState(state.count + 1, momentum), state)
            out = nn.mlp_apply(net, nn.concat_rows(rows), context=context)
            step = out[..., 0] * jnp.exp(out[..., 1] * self.exp_mult) * self.step_mult
            updates = treedef.unflatten(
                [-s.reshape(g.shape) for s, g in zip(nn.split_rows(step, rows), flat_g)]
            )
            return base.mask_non_finite(updates, MLPLOptState(state.count + 1, momentum), state)

        return base.Transform(init, update, masked=True)  # both paths mask (the kernel in its pass)

"""Fused Pallas step of the ``mlp`` learned optimizer (:class:`lopt.learned.MLPLOpt`).

Per tensor, two passes over memory:

1. **Reduction pass** (the extra pass): reads gradient, parameter and momenta, forms the
   ``2 + k`` features with the *updated* momenta and writes per-program partial sums of
   their squares (a few floats per 1,024 parameters). XLA adds the partial sums: that
   gives the per-tensor second moments the features are normalised by.
2. **Main pass**: reads gradient, parameter and momenta again, updates the momenta, and
   runs the MLP on a ``[block, 8]`` feature tile in registers (tensor-core products for
   the layers, ``tf32`` by default as XLA's float32 products on GPU; the first one has
   ``K = 8``, tf32's native depth). The per-tensor normalisation is folded into the
   ``[8, hidden]`` first-layer matrix and the time features into its bias (added to the
   product), so the kernel does no per-feature scaling. It writes the new momenta (in place) and the
   update, or the new parameter when ``apply=True``. With bfloat16 products
   (``KernelConfig(precision="bf16")``) the output layer is a product as well and the ReLUs are
   taken in bfloat16 (:func:`lopt.kernels.mlp_kernels.row_updates`, :func:`lopt.kernels.mlp_kernels.relu`).

Launches over a pytree: by default each tensor's reduction pass and main pass are kernels of their
own (2 per tensor). With ``KernelConfig(reduction="overlapped")`` the main pass launch of each tensor
also runs the next tensor's reduction pass, its programs interleaved with the main pass's
(:func:`lopt.kernels.tiles.interleaved`): the main pass is bound by instruction latency rather than
memory (it moves 36 of the step's 56 bytes per parameter with bfloat16 momenta), so the reduction's
reads can run beside it; one launch per tensor plus the first tensor's reduction. The programs are
in :mod:`lopt.kernels.mlp_kernels`.

Bytes per float32 parameter with ``k = 6`` momenta: reduction 4 + 4 + 24 = 32 read; main
32 read + 24 + 4 written: 92 in all (Adam's fused minimum is 28). Gradients (``jax.grad``)
come from the XLA path (:func:`lopt.kernels.tiles.with_reference_vjp`); ``vmap`` adds a grid
axis to both passes.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from lopt.learned import MLPLOpt
    >>> from lopt.kernels import mlp_step
    >>> lopt_ = MLPLOpt()
    >>> theta = lopt_.init(jax.random.key(0))
    >>> g = {"w": jnp.ones((5, 3))}
    >>> m = {"w": jnp.zeros((5, 3, 6))}
    >>> ctx = jnp.zeros(11)
    >>> u, m2 = mlp_step.mlp_update(lopt_, theta["mlp"], ctx, g, m, g, interpret=True)
    >>> u_ref, _ = mlp_step.mlp_update_reference(lopt_, theta["mlp"], ctx, g, m, g)
    >>> bool(jnp.allclose(u["w"], u_ref["w"], rtol=1e-5, atol=1e-9))
    True
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt.kernels import mlp_kernels as K
from lopt.kernels import tiles
from lopt.learned import base, nn
from lopt.learned import features as F
from lopt.learned import stochastic_rounding as SR

__all__ = ["bytes_per_param", "launch_config", "mlp_update", "mlp_update_reference", "passes",
           "supported", "tile_width"]

_f32 = jnp.float32
_NORM_EPS = 1e-5  # F.second_moment_normalize's default


def supported(lopt: Any) -> bool:
    """Whether the fused kernel implements this :class:`MLPLOpt` config.

    Needs at least one hidden layer and a power-of-two hidden width >= 16 (the smallest
    tensor-core product in Triton).

    Example:
        >>> from lopt.learned import MLPLOpt
        >>> supported(MLPLOpt()), supported(MLPLOpt(hidden_size=12))
        (True, False)
    """
    h = lopt.hidden_size
    return lopt.hidden_layers >= 1 and h >= 16 and not h & (h - 1)


def launch_config(precision: str = "tf32") -> tiles.KernelConfig:
    """The launch :class:`lopt.learned.MLPLOpt` uses for its fused step at product ``precision``.

    Two-warp programs of 128 parameters: Triton then emits ``mma.sync`` products (Hopper's
    warp-group products need four warps) with fewer shared-memory barriers. On an H100 at 100M
    parameters, each against Adam in the same run: bf16 products 4.64 against 5.07 ms at 256 x 4
    (stop 61), 3.79 ms = 3.65x with bfloat16 momenta since stop 62's kernel (256 x 4: 4.61 ms,
    64 x 2: 4.10 ms); TF32 products 5.81 against 6.05 ms (5.62x against 5.95x, stop 62;
    ``benchmarks/kernel_step.py``). ``tf32x3`` and ``ieee`` take the same launch, untimed.

    Example:
        >>> cfg = launch_config("bf16")
        >>> cfg.block, cfg.num_warps, cfg.precision, launch_config().num_warps
        (128, 2, 'bf16', 2)
    """
    return tiles.KernelConfig(block=128, reduce_block=256, num_warps=2, precision=precision)


def tile_width(num_decays: int) -> int:
    """Columns of the feature tile: momenta, gradient, parameter; a power of two >= 8."""
    return tiles.block_size(num_decays + 2, minimum=8)


def passes() -> int:
    """Passes over each tensor: one reduction pass plus the main pass."""
    return 2


def bytes_per_param(num_decays: int = 6, param_bytes: int = 4, *, apply: bool = True,
                    state_bytes: int = 4) -> int:
    """Bytes a fused step moves per parameter (``apply=False`` writes the update instead;
    ``state_bytes``: 2 for bfloat16 momenta).

    Example:
        >>> bytes_per_param(), bytes_per_param(state_bytes=2)
        (92, 56)
    """
    read = 2 * (2 * param_bytes + state_bytes * num_decays)  # both passes read g, p, momenta
    written = state_bytes * num_decays + param_bytes  # momenta, and the new parameter or the update
    # Without apply, optax.apply_updates reads the parameter and the update, writes it back.
    return read + written + (0 if apply else 3 * param_bytes)


def _first_layer(net, context, mean_sq, k, width):
    """``([width, hidden], [hidden])``: the normalisation folded into the rows; the bias with the
    context's share added."""
    n_x = k + 2
    w0 = net["w0"].astype(_f32)
    b0 = net["b0"].astype(_f32)
    if context is not None and context.shape[-1]:
        b0 = b0 + context.astype(_f32) @ w0[n_x:]
    scale = jax.lax.rsqrt(_NORM_EPS + mean_sq)  # order: momenta, gradient, parameter
    rows = jnp.concatenate([w0[2:n_x], w0[0:2]], axis=0) * scale[:, None]
    pad = jnp.zeros((width - n_x, w0.shape[1]), _f32)
    return jnp.concatenate([rows, pad], axis=0), b0


def _reduction_pass(cfg, interpret, k, width, coef, tensor):
    """The reduction pass of one flattened ``(n, g, p, m)`` tensor in a launch of its own: its
    per-program partial sums."""
    n, g1, p1, m2 = tensor
    rb, per_block = cfg.reduce_block, dataclasses.replace(cfg, programs=None)  # one program per block
    reduce = tiles.call(
        functools.partial(K.reduce_kernel, n=n, k=k, block=rb, width=width),
        [jax.ShapeDtypeStruct((tiles.program_count(n, rb, per_block) * width,), _f32)],
        rows=n, block=rb, cfg=per_block, interpret=interpret, name="lopt_mlp_reduce")
    (partial,) = reduce(g1, p1, m2, coef)
    return partial


def _main_pass(lopt, cfg, interpret, apply, leaf, coef, tensor, partial, net, context, step, following):
    """The main pass of ``tensor`` (normalised by its reduction's ``partial`` sums): ``(out, new
    momenta)``, and the ``following`` tensor's partial sums when its reduction runs in this launch."""
    n, g1, p1, m2 = tensor
    k, width = m2.shape[1], tile_width(m2.shape[1])
    mean_sq = jnp.sum(partial.reshape(-1, width), axis=0)[: k + 2] / n
    w0, b0 = _first_layer(net, context, mean_sq, k, width)
    layers, rounding = lopt.hidden_layers, lopt.state_dtype == "bfloat16"
    precision = cfg.precision if not interpret or cfg.precision == "bf16" else None
    hidden = []
    for i in range(1, layers):
        # bfloat16 products take their weights as bfloat16: loaded at half the bytes, no rounding per program
        hidden += [net[f"w{i}"].astype(jnp.bfloat16 if precision == "bf16" else _f32), net[f"b{i}"].astype(_f32)]
    wout, bout = K.output_weights(net[f"w{layers}"].astype(_f32), net[f"b{layers}"].astype(_f32), precision)
    outputs = [jax.ShapeDtypeStruct((n,), jnp.result_type(p1)), jax.ShapeDtypeStruct((n, k), m2.dtype)]
    launch = {}
    if following is not None:
        reduce_blocks = tiles.program_count(following[0], cfg.reduce_block, cfg)  # cfg.programs is None
        outputs.append(jax.ShapeDtypeStruct((reduce_blocks * width,), _f32))
        launch = {"programs": tiles.program_count(n, cfg.block, cfg) + reduce_blocks}
    main = tiles.call(
        functools.partial(
            K.main_kernel, n=n, k=k, block=cfg.block, width=width, hidden_layers=layers,
            step_mult=lopt.step_mult, apply=apply,
            precision=precision,
            salt=leaf if rounding else None,
            programs=cfg.programs, packed_cvt=not interpret,
            following=None if following is None else (following[0], cfg.reduce_block)),
        outputs, rows=n, block=cfg.block, cfg=cfg, interpret=interpret,
        aliases={2: 1, **({1: 0} if apply else {})},  # params in place when written (apply)
        name="lopt_mlp_step" if following is None else "lopt_mlp_step_and_reduce", persistent=True, **launch)
    steps = [jnp.reshape(step, (1,)).astype(_f32)] if rounding else []
    next_inputs = [] if following is None else list(following[1:])
    exp_mult = jnp.full((1,), lopt.exp_mult, _f32)  # read per row (lopt.kernels.tiles.per_row)
    return main(g1, p1, m2, coef, w0, b0, *hidden, wout, bout, exp_mult, *steps, *next_inputs)


def _fused_leaves(lopt, cfg, interpret, apply, leaves, gs, ps, ms, net, context, step):
    """The fused step of the non-empty tensors ``gs, ps, ms`` (at tree positions ``leaves``, which
    salt bfloat16 momenta's rounding): ``[(out, new momenta)]``. With ``cfg.reduction ==
    "overlapped"`` each main pass launch also runs the next tensor's reduction pass (a persistent
    main pass cannot: :class:`lopt.kernels.tiles.KernelConfig` refuses the two together)."""
    k = len(lopt.decays)
    width = tile_width(k)
    tensors = [(int(np.prod(g.shape)), g.reshape(-1), p.reshape(-1), m.reshape(-1, k)) for g, p, m in zip(gs, ps, ms)]
    overlap = cfg.reduction == "overlapped"
    coef = jnp.asarray(K.coefficients(lopt.decays, width))
    partial = _reduction_pass(cfg, interpret, k, width, coef, tensors[0])
    results = []
    for i, (leaf, tensor) in enumerate(zip(leaves, tensors)):
        following = tensors[i + 1] if i + 1 < len(tensors) else None
        outs = _main_pass(lopt, cfg, interpret, apply, leaf, coef, tensor, partial, net, context, step,
                          following if overlap else None)
        if overlap and following is not None:
            out, m_new, partial = outs
        else:
            out, m_new = outs
            if following is not None:
                partial = _reduction_pass(cfg, interpret, k, width, coef, following)
        results.append((out.reshape(gs[i].shape), m_new.reshape(ms[i].shape)))
    return results


def _reference_tensor(lopt, apply, leaf, g, p, m, net, context, step):
    """One tensor through exactly the ops of :class:`MLPLOpt`'s XLA update (masked as it is;
    ``leaf``, ``step``: the tensor's position and the new step count, for bfloat16 momenta)."""
    momentum = F.momentum_update(m.astype(_f32), g, jnp.asarray(lopt.decays, _f32))
    x = jnp.concatenate([g.astype(_f32)[..., None], p.astype(_f32)[..., None], momentum], -1)
    x = F.second_moment_normalize(x).reshape(-1, x.shape[-1])
    out = nn.mlp_apply(net, x, context=context)
    if lopt.state_dtype == "bfloat16":
        momentum = SR.round_columns(momentum, SR.entry_bits(g.shape, jnp.asarray(step).astype(jnp.uint32), leaf))
    step = out[..., 0] * jnp.exp(out[..., 1] * lopt.exp_mult) * lopt.step_mult
    update, momentum = base.mask_non_finite((-step).reshape(g.shape), momentum, m)
    update = update.astype(jnp.result_type(p))
    return (p + update if apply else update), momentum


def _reference_leaves(lopt, apply, leaves, gs, ps, ms, net, context, step):
    """:func:`_reference_tensor` of each tensor of :func:`_fused_leaves`' arguments."""
    return [_reference_tensor(lopt, apply, leaf, g, p, m, net, context, step)
            for leaf, g, p, m in zip(leaves, gs, ps, ms)]


def _tree_map3(fn, grads, momentum, params):
    flat_g, treedef = jax.tree.flatten(grads)
    flat_m = treedef.flatten_up_to(momentum)
    flat_p = treedef.flatten_up_to(params)
    pairs = [fn(leaf, g, p, m) for leaf, (g, p, m) in enumerate(zip(flat_g, flat_p, flat_m))]
    return treedef.unflatten([a for a, _ in pairs]), treedef.unflatten([b for _, b in pairs])


def mlp_update_reference(lopt, net, context, grads, momentum, params, *, apply=False, step=None):
    """The XLA path, tensor by tensor: ``(updates or new params, new momentum)`` (``step``: as
    :func:`mlp_update`)."""
    step = _checked_step(lopt, step)
    return _tree_map3(lambda leaf, g, p, m: _reference_tensor(lopt, apply, leaf, g, p, m, net, context, step),
                      grads, momentum, params)


def _checked_step(lopt, step):
    if lopt.state_dtype == "bfloat16" and step is None:
        raise ValueError("mlp_update: bfloat16 momenta are rounded with the step's random bits; pass "
                         "step= (the new step count, state.count + 1).")
    return jnp.asarray(0.0 if step is None else step, _f32)


def mlp_update(
    lopt: Any,
    net: dict[str, jax.Array],
    context: jax.Array | None,
    grads: Any,
    momentum: Any,
    params: Any,
    *,
    interpret: bool,
    apply: bool = False,
    cfg: tiles.KernelConfig | None = None,
    step: Any = None,
) -> tuple[Any, Any]:
    """One fused :class:`MLPLOpt` step over a pytree: ``(updates or new params, momentum)``.

    Args:
        lopt: the :class:`MLPLOpt` config (must be :func:`supported`).
        net: ``theta["mlp"]``.
        context: per-step inputs shared by all parameters (time features), or ``None``.
        grads, momentum, params: the step's gradient, momenta ``(*p.shape, k)`` (before
            this step's update) and parameters.
        interpret: run in Pallas interpret mode (CPU tests) instead of Triton.
        apply: return ``params + updates`` (one pass) instead of the updates.
        cfg: launch settings.
        step: the new step count (``state.count + 1``); needed with ``state_dtype="bfloat16"``,
            whose stochastic rounding draws its bits from it.

    Returns:
        Updates (or new params) in each parameter's dtype, and the new momenta; a non-finite
        entry is handled as :func:`lopt.learned.mask_non_finite` does, inside the main pass
        (update 0, momentum kept).
    """
    if not supported(lopt):
        raise ValueError(f"no fused kernel for {lopt!r}: it needs hidden_layers >= 1 and a "
                         "power-of-two hidden_size >= 16; use the XLA path (mode 'xla').")
    cfg = cfg or tiles.KernelConfig()
    step = _checked_step(lopt, step)

    flat_g, treedef = jax.tree.flatten(grads)
    flat_m, flat_p = treedef.flatten_up_to(momentum), treedef.flatten_up_to(params)
    # the tensor's position salts bfloat16 momenta's rounding; empty tensors take the XLA path
    results = {leaf: _reference_tensor(lopt, apply, leaf, g, p, m, net, context, step)
               for leaf, (g, p, m) in enumerate(zip(flat_g, flat_p, flat_m)) if g.size == 0}
    leaves = tuple(leaf for leaf, g in enumerate(flat_g) if g.size)
    if leaves:
        fused = tiles.with_reference_vjp(
            functools.partial(_fused_leaves, lopt, cfg, interpret, apply, leaves),
            functools.partial(_reference_leaves, lopt, apply, leaves))
        gs, ps, ms = ([flat[leaf] for leaf in leaves] for flat in (flat_g, flat_p, flat_m))
        results.update(zip(leaves, fused(gs, ps, ms, net, context, step)))
    return tuple(treedef.unflatten([results[leaf][i] for leaf in range(len(flat_g))]) for i in (0, 1))

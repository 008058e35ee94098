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
   taken in bfloat16 (:func:`_update`, :func:`_relu`).

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
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from lopt.kernels import tiles
from lopt.learned import base, nn
from lopt.learned import features as F
from lopt.learned import stochastic_rounding as SR

__all__ = ["bytes_per_param", "launch_config", "mlp_update", "mlp_update_reference", "passes",
           "supported", "tile_width"]

_f32 = jnp.float32
_NORM_EPS = 1e-5  # F.second_moment_normalize's default
_OUT_WIDTH = 8  # bf16 products: the output layer is [block, hidden] @ [hidden, 8], N = 8 the smallest MMA tile


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


def _coefficients(decays: tuple[float, ...], width: int) -> np.ndarray:
    """Rows ``[momentum, gradient, parameter]`` so that ``x = m*c0 + g*c1 + p*c2``.

    Columns: ``k`` updated momenta, the gradient, the parameter, zeros.
    """
    k = len(decays)
    c = np.zeros((3, width), np.float32)
    c[0, :k] = decays
    c[1, :k] = 1.0 - np.asarray(decays, np.float32)
    c[1, k] = 1.0
    c[2, k + 1] = 1.0
    return c


def _block_inputs(g_ref, p_ref, m_ref, n, k, block, width, index=None):
    """One block's gradient and parameter rows and momentum tile (``index``: the block; ``None``:
    this program's)."""
    return (tiles.load_rows(g_ref, n, block, index=index), tiles.load_rows(p_ref, n, block, index=index),
            tiles.load_tile(m_ref, n, k, block, width, index=index))


def _features(g, p, m, coef_ref):
    """``[block, width]`` features: the updated momenta, the gradient, the parameter (``coef_ref``:
    the rows of :func:`_coefficients`)."""
    c_m, c_g, c_p = (coef_ref[i, :][None, :] for i in range(3))
    return m * c_m + g[:, None] * c_g + p[:, None] * c_p


def _reduce_block(g_ref, p_ref, m_ref, coef_ref, out_ref, *, n, k, block, width, index=None):
    """Block ``index``'s (``None``: this program's) sums of the squared features, written to its
    ``width`` slots of ``out_ref``."""
    g, p, m = _block_inputs(g_ref, p_ref, m_ref, n, k, block, width, index)
    x = _features(g, p, m, coef_ref)
    sums = jnp.sum(x * x, axis=0)  # masked rows are zero
    out_ref[pl.ds((pl.program_id(0) if index is None else index) * width, width)] = sums


def _reduce_kernel(g_ref, p_ref, m_ref, coef_ref, out_ref, *, n, k, block, width):
    _reduce_block(g_ref, p_ref, m_ref, coef_ref, out_ref, n=n, k=k, block=block, width=width)


def _relu(z, precision, packed_cvt=False):
    """ReLU of a hidden layer's pre-activations; with bf16 products, of them rounded to bfloat16 (the
    next product rounds its operand so anyway, and ``relu(round(z)) == round(relu(z))``).

    ``packed_cvt`` (bf16 on the GPU): one ``cvt.rn.relu.bf16x2.f32`` per pair of entries, the rounding
    and the ReLU in the conversion (``F2FP.RELU`` on sm_90): 32 fewer instructions per parameter than
    rounding and then taking a packed max (static count at 128 x 2, stop 62). PTX packs its first
    source into the high half, so entry 0 (``$1``) goes second. Interpret mode has no PTX: the CPU
    takes the max after the rounding, the same values."""
    if precision == "bf16" and packed_cvt:
        (h,) = plgpu.elementwise_inline_asm(
            "cvt.rn.relu.bf16x2.f32 $0, $2, $1;", args=[z], constraints="=r,f,f", pack=2,
            result_shape_dtypes=[jax.ShapeDtypeStruct(z.shape, jnp.bfloat16)])
        return h
    if precision == "bf16":
        return jnp.maximum(z.astype(jnp.bfloat16), jnp.bfloat16(0))
    return jax.nn.relu(z)


def _update(h, wout_ref, bout_ref, precision, exp_mult, step_mult):
    """The ``[block]`` update ``-direction * exp(log_mag * exp_mult) * step_mult`` of each row of the
    last hidden tile (not yet masked).

    With bfloat16 products the two outputs are one more tensor-core product, ``[block, hidden] @
    [hidden, 8]`` (:func:`_output_weights`: columns 2-7 zero; ``bout_ref``: 8 biases, added as the
    product's accumulator), split into its even and odd columns: a thread of the product's layout
    holds each adjacent pair, so ``direction`` and ``log_mag`` of a row meet in one thread without a
    shuffle; the update of columns 1-3 is ``-0 * exp(0) = -0``, and one sum over the 4 columns picks
    column 0 (16 shuffles per thread at 128 x 2 against 32 for two row reductions of the product:
    488 against 524 instructions per parameter, static count, stop 62). With TF32 products a
    product costs more than it saves (668 -> 712 at 256 x 4: the float32 operand goes through
    shared memory), so ``wout_ref`` is ``[2, hidden]`` and the outputs are row reductions.
    """
    if precision == "bf16":
        out = tiles.dot(h, wout_ref[...], precision) + bout_ref[...][None, :]
        direction, log_mag = jnp.unstack(out.reshape(out.shape[0], _OUT_WIDTH // 2, 2), axis=-1)
        return jnp.sum(-(direction * jnp.exp(log_mag * exp_mult) * step_mult), axis=1)
    direction = jnp.sum(h * wout_ref[0, :][None, :], axis=1) + bout_ref[0]
    log_mag = jnp.sum(h * wout_ref[1, :][None, :], axis=1) + bout_ref[1]
    return -(direction * jnp.exp(log_mag * exp_mult) * step_mult)


def _output_weights(w_last, b_last, precision):
    """The last layer's weights and biases as :func:`_update` reads them: ``[hidden, 8]`` in bfloat16
    and 8 biases (columns 2-7 zero) for bf16 products, else ``[2, hidden]`` and 2 biases."""
    if precision == "bf16":
        return (jnp.zeros((w_last.shape[0], _OUT_WIDTH), _f32).at[:, :2].set(w_last).astype(jnp.bfloat16),
                jnp.zeros((_OUT_WIDTH,), _f32).at[:2].set(b_last))
    return w_last.T, b_last


def _main_kernel(g_ref, p_ref, m_ref, coef_ref, w0_ref, b0_ref, *refs, n, k, block, width, hidden_layers,
                 exp_mult, step_mult, apply, precision, salt, programs, packed_cvt, following=None):
    """The main pass. ``programs``: ``None``, one program per block; else a persistent kernel of
    ``programs`` programs, program ``pid`` taking blocks ``pid, pid + programs, ...``: each
    iteration loads the next block's gradient, parameter and momenta before computing and storing
    the current one, so those loads are in flight during the current block's products.

    ``following``: ``None``, or ``(n, reduce_block)`` of the next tensor, whose reduction pass
    (:func:`_reduce_block`) this launch runs too (``KernelConfig(reduction="overlapped")``): its
    gradient, parameter and momenta refs follow the network's inputs, its partial sums are the
    last output, and :func:`lopt.kernels.tiles.interleaved` spreads its blocks among the main
    pass's programs."""
    hidden_refs = refs[: 2 * (hidden_layers - 1)]
    wout_ref, bout_ref, *rest = refs[2 * (hidden_layers - 1):]
    step_ref, *rest = rest if salt is not None else (None, *rest)
    next_refs, rest = (rest[:3], rest[3:]) if following is not None else ((), rest)
    out_ref, m_out_ref, *partial_ref = rest
    load = functools.partial(_block_inputs, g_ref, p_ref, m_ref, n, k, block, width)

    def block_step(inputs, index):
        g, p, m = inputs
        x = _features(g, p, m, coef_ref)
        # lopt.learned.mask_non_finite in this pass: a non-finite new momentum keeps its old value
        # (columns >= k hold other features and are not stored), a non-finite update is 0
        new_m = tiles.finite_or(x, m)
        if salt is not None:  # bfloat16 momenta: each column's share of the entry's bits, as the XLA path
            bits = SR.random_bits(tiles.row_ids(block, index=index).astype(jnp.uint32),
                                  step_ref[0].astype(jnp.uint32), salt)
            columns = jax.lax.broadcasted_iota(jnp.int32, (block, width), 1)
            new_m = SR.round_bits_of_state(new_m, SR.split_bits(bits[:, None], columns))
        tiles.store_tile(m_out_ref, new_m, n, k, block, index=index)
        # the network's weights are read where they are used, after that store (L1/L2 hits): read
        # before it they are held in registers through the features (162 -> 233 registers at 256 x 4)
        # (each bias is added to its product: Triton's op combining makes it the accumulator)
        h = _relu(tiles.dot(x, w0_ref[...], precision) + b0_ref[...][None, :], precision, packed_cvt)
        for i in range(hidden_layers - 1):
            h = _relu(tiles.dot(h, hidden_refs[2 * i][...], precision) + hidden_refs[2 * i + 1][...][None, :],
                      precision, packed_cvt)
        update = tiles.finite_or(_update(h, wout_ref, bout_ref, precision, exp_mult, step_mult), 0.0)
        update = update.astype(out_ref.dtype)
        result = (p + update.astype(_f32)) if apply else update
        tiles.store_rows(out_ref, result, n, block, index=index)

    if following is not None:
        n_next, reduce_block = following
        is_reduce, index = tiles.interleaved(pl.program_id(0), pl.cdiv(n, block), pl.cdiv(n_next, reduce_block))
        pl.when(is_reduce)(lambda: _reduce_block(*next_refs, coef_ref, *partial_ref, n=n_next, k=k,
                                                 block=reduce_block, width=width, index=index))
        pl.when(jnp.logical_not(is_reduce))(lambda: block_step(load(index), index))
        return
    first = load(None if programs is None else pl.program_id(0))
    if programs is None:
        block_step(first, None)
        return
    pid = pl.program_id(0)

    def body(i, current):
        index = pid + i * programs
        upcoming = load(index + programs)  # issued before this block's arithmetic
        block_step(current, index)
        return upcoming

    iterations = pl.cdiv(pl.cdiv(n, block), programs)  # blocks past the last are fully masked
    jax.lax.fori_loop(0, iterations, body, first)


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
        functools.partial(_reduce_kernel, n=n, k=k, block=rb, width=width),
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
    wout, bout = _output_weights(net[f"w{layers}"].astype(_f32), net[f"b{layers}"].astype(_f32), precision)
    outputs = [jax.ShapeDtypeStruct((n,), jnp.result_type(p1)), jax.ShapeDtypeStruct((n, k), m2.dtype)]
    launch = {}
    if following is not None:
        n_next, rb = following[0], cfg.reduce_block
        reduce_blocks = -(-n_next // rb)
        outputs.append(jax.ShapeDtypeStruct((reduce_blocks * width,), _f32))
        launch = {"programs": -(-n // cfg.block) + reduce_blocks}
    main = tiles.call(
        functools.partial(
            _main_kernel, n=n, k=k, block=cfg.block, width=width, hidden_layers=layers,
            exp_mult=lopt.exp_mult, step_mult=lopt.step_mult, apply=apply,
            precision=precision,
            salt=leaf if rounding else None,
            programs=cfg.programs, packed_cvt=not interpret,
            following=None if following is None else (following[0], cfg.reduce_block)),
        outputs, rows=n, block=cfg.block, cfg=cfg, interpret=interpret,
        aliases={2: 1, **({1: 0} if apply else {})},  # params in place when written (apply)
        name="lopt_mlp_step" if following is None else "lopt_mlp_step_and_reduce", persistent=True, **launch)
    steps = [jnp.reshape(step, (1,)).astype(_f32)] if rounding else []
    next_inputs = [] if following is None else list(following[1:])
    return main(g1, p1, m2, coef, w0, b0, *hidden, wout, bout, *steps, *next_inputs)


def _fused_leaves(lopt, cfg, interpret, apply, leaves, gs, ps, ms, net, context, step):
    """The fused step of the non-empty tensors ``gs, ps, ms`` (at tree positions ``leaves``, which
    salt bfloat16 momenta's rounding): ``[(out, new momenta)]``. With ``cfg.reduction ==
    "overlapped"`` (and no persistent main pass) each main pass launch also runs the next
    tensor's reduction pass."""
    k = len(lopt.decays)
    width = tile_width(k)
    tensors = [(int(np.prod(g.shape)), g.reshape(-1), p.reshape(-1), m.reshape(-1, k)) for g, p, m in zip(gs, ps, ms)]
    overlap = cfg.reduction == "overlapped" and cfg.programs is None
    coef = jnp.asarray(_coefficients(lopt.decays, width))
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

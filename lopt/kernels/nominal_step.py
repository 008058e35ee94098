"""Fused Pallas step of the ``nominal`` learned optimizer (:class:`lopt.learned.NominalLOpt`).

Per tensor of rank >= 2, one extra pass and one main pass:

1. **Statistics** (:mod:`lopt.kernels.factored_stats`, Pallas): the factored row and column
   means of ``g**2`` and the mean of ``p**2`` (the parameter's RMS input), from one pass that
   reads ``g`` and ``p`` once (8 bytes per float32 parameter; XLA's three reductions, which
   ``KernelConfig(statistics="xla")`` and tensors not factored over their last two axes use,
   read 12). The new row/column accumulators and their two small scale factors
   (:func:`lopt.learned.features.factored_scale_factors`) are computed from them in XLA, at the
   size of a row plus a column.
2. **Main pass** (Pallas): reads ``g``, ``p``, the three momenta and the second moment,
   updates them, gathers each parameter's row and column factor, forms the six clipped
   inputs, runs the 6-8-8-2 network as unrolled multiply-adds (about 300 FLOPs, no
   tensor cores at this width) and writes the momenta, the second moment and the update
   (or the new parameter when ``apply=True``): 24 bytes read and 20 written.

So 52 bytes per float32 parameter with ``apply=True`` (Adam's fused minimum is 28).

With ``step_size="distance"`` (the pretrained optimizer) the main pass also advances the
distance estimate (:mod:`lopt.learned.distance`): it reads the running gradient sum and the
initial parameters ``x0``, writes the new sum, and each program writes its partial sums of
``<g, x0 - p>`` and ``|new sum|``, which XLA adds into the new estimate: 64 bytes in all.
With ``anchored_direction=True`` the direction at zero gradient inputs is subtracted: the main
pass evaluates the network a second time on the parameter input alone (``KernelConfig(anchor=
"network")``, the default), or, since for one tensor and step that is a piecewise-linear function
of the parameter input, looks it up from a small table (``anchor="table"``,
:mod:`lopt.kernels.anchor_table`: fewer instructions, not faster on an H100): arithmetic either
way, no more bytes.
Tensors of rank < 2 (biases, scales: an unfactored accumulator per element) and empty
tensors take the XLA path inside the same step. Gradients come from the XLA path.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from lopt.learned import NominalLOpt
    >>> from lopt.kernels import nominal_step
    >>> lopt_ = NominalLOpt()
    >>> theta = lopt_.init(jax.random.key(0))
    >>> opt = lopt_.optimizer(theta, num_steps=10)
    >>> params = {"w": jnp.ones((5, 3)), "b": jnp.zeros(3)}
    >>> state = opt.init(params)
    >>> u, _ = nominal_step.nominal_update(lopt_, theta, 10, params, state, params,
    ...                                    interpret=True)
    >>> u_ref, _ = opt.update(params, state, params)
    >>> bool(jnp.allclose(u["w"], u_ref["w"], rtol=1e-5))
    True
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from lopt.kernels import anchor_table, bf16_rounding, factored_stats, packed_half, tiles
from lopt.learned import base, nominal
from lopt.learned import distance as D
from lopt.learned import features as F
from lopt.learned import stochastic_rounding as SR

__all__ = ["DEFAULT_CONFIG", "bytes_per_param", "folded_weights", "nominal_update", "passes", "supported"]

_f32 = jnp.float32
_FACTORED_EPS = 1e-30  # F.factored_update's default
_MAX_HIDDEN = 32  # the network is unrolled: keep the kernel's code small
# Launch default: 512 rows x 4 warps (4 per thread). While a block's loads waited behind its stores
# (until stop 54) 128 x 4 was the fastest (stops 39 and 42); with every load first, more rows per
# thread share the per-block instructions and 512 x 4 is the fastest of 8 shapes on an H100 (stop 54,
# pretrained, folded: 3.42-3.44 ms against 3.61-3.62 at 128 x 4; weights loaded: 4.17 against 4.33;
# benchmarks/results/kernel_step_gpu-NVIDIA_H100_blocks*_stop54.json), though at 142 registers only
# 12 warps per SM stay resident.
DEFAULT_CONFIG = tiles.KernelConfig(block=512)


def supported(lopt: Any) -> bool:
    """Whether the fused kernel implements this :class:`NominalLOpt` config.

    Example:
        >>> from lopt.learned import NominalLOpt
        >>> supported(NominalLOpt()), supported(NominalLOpt(hidden_size=64))
        (True, False)
        >>> supported(NominalLOpt(step_size="distance"))  # the pretrained optimizer's config
        True
    """
    return lopt.hidden_size <= _MAX_HIDDEN


def passes() -> int:
    """Passes over a rank >= 2 tensor: one (XLA) reduction pass plus the main pass."""
    return 2


def bytes_per_param(param_bytes: int = 4, *, apply: bool = True, distance: bool = False,
                    state_bytes: int = 4, statistics: str = "kernel") -> int:
    """Bytes a fused step moves per parameter of a rank >= 2 tensor, as implemented.

    Args:
        param_bytes: bytes of one parameter (and gradient) entry.
        apply: whether the kernel writes the new parameters (else the update, which XLA adds).
        distance: ``step_size="distance"``: the kernel also reads the running gradient sum and
            ``x0`` and writes the sum (its partial sums are a few floats per block).
        state_bytes: bytes of one state entry (4; 2 with ``state_dtype="bfloat16"``).
        statistics: ``"kernel"``: the one-pass statistics kernel reads ``g`` and ``p`` once
            (:mod:`lopt.kernels.factored_stats`, the tensors it applies to); ``"xla"``: XLA's three
            reductions read ``g`` twice and ``p`` once (:attr:`lopt.kernels.tiles.KernelConfig.statistics`).

    Example:
        >>> bytes_per_param(), bytes_per_param(distance=True), bytes_per_param(distance=True, state_bytes=2)
        (52, 64, 42)
        >>> bytes_per_param(distance=True, statistics="xla")
        68
    """
    reductions = (2 if statistics == "kernel" else 3) * param_bytes
    read = 2 * param_bytes + 4 * state_bytes  # g, p, three momenta, second moment
    written = 4 * state_bytes + param_bytes  # momenta, second moment, new parameter or update
    extra = 3 * state_bytes if distance else 0  # read grad_sum and x0, write grad_sum
    return reductions + read + written + extra + (0 if apply else 3 * param_bytes)


def _step_scalars(lopt, theta, count, num_steps):
    """``(t, lr, time_context)`` of this step, as :class:`NominalLOpt` computes them."""
    t = count.astype(_f32)
    if num_steps is None:
        fraction = jnp.asarray(lopt.unknown_horizon_fraction, _f32)
    else:
        fraction = jnp.clip((t - 1.0) / num_steps, 0.0, 1.0)
    return t, lopt.learning_rate(theta, fraction), F.fraction_embedding(fraction)


def _flat_index(axis_ids: list[jax.Array], shape: tuple[int, ...], drop: int) -> jax.Array:
    """Row-major index into ``shape`` with axis ``drop`` removed."""
    out, stride = 0, 1
    for a in reversed(range(len(shape))):
        if a != drop:
            out = out + axis_ids[a] * stride
            stride *= shape[a]
    return out


def _block_inputs(refs, *, n, shape, d0, d1, k, block, distance, index):
    """One block's inputs, name -> a function loading them (``index``: the block; ``None``: this
    program's). The one-program-per-block kernel calls them all before its first store; the
    persistent one calls them a block ahead (:func:`_kernel`)."""
    g_ref, p_ref, m_ref, v_ref, rf_ref, cf_ref, gs_ref, x0_ref = refs

    def rows(ref, col=None):
        return lambda: tiles.load_rows(ref, n, block, col=col, index=index)

    def factors():  # the row and column factor of each parameter (rows past the end: the last one's)
        i = jnp.minimum(tiles.row_ids(block, index=index), n - 1)
        axis_ids, stride = [None] * len(shape), 1
        for a in reversed(range(len(shape))):
            axis_ids[a] = jax.lax.rem(jax.lax.div(i, stride), shape[a]) if a else jax.lax.div(i, stride)
            stride *= shape[a]
        return rf_ref[_flat_index(axis_ids, shape, d0)], cf_ref[_flat_index(axis_ids, shape, d1)]

    inputs = {"g": rows(g_ref), "p": rows(p_ref), "v": rows(v_ref),
              **{f"m{j}": rows(m_ref, j) for j in range(k)}, "factors": factors}
    if distance:
        inputs.update(grad_sum=rows(gs_ref), x0=rows(x0_ref))
    return inputs


def _kernel(*refs, n, shape, d0, d1, decays, b2, eps, clip, update_clip, hidden, block, apply,
            distance_decay, anchored, folded, salt, programs, head_size, anchor_size, half=None, ptx=False,
            paired=False):
    """The main pass. ``programs``: ``None``, one program per block; else the persistent kernel of
    ``programs`` programs, program ``pid`` taking blocks ``pid, pid + programs, ...``: before its
    loop it loads its first block, and each iteration loads the next block (kept in the loop's
    carry, in registers on a GPU) before computing and storing the current one, so the next block's
    loads are in flight during the current block's arithmetic. The distance step's partial sums are
    then per program: each row's terms are added up over the program's blocks in the carry and
    reduced across the block once, after the loop (a reduction across a block is warp shuffles and
    a barrier; per block they cost the per-block kernel ~25 instructions per parameter).
    ``head_size``: how many packed scalars come before the network's weights (:func:`_pack`).
    ``anchor_size``: ``None``, or the anchored direction is looked up in a table of this size
    (:mod:`lopt.kernels.anchor_table`) instead of evaluated by a second pass of the network.
    ``half``: ``None``, the network in float32; else it runs in float16 (:mod:`lopt.kernels.packed_half`),
    two parameters per instruction if ``half == "packed"`` (the GPU), emulated if ``"emulated"``.
    ``ptx``: the GPU's inline PTX (the finiteness test, :func:`lopt.kernels.tiles.finite_or`, and
    bfloat16 state's rounding, :mod:`lopt.kernels.bf16_rounding`); ``paired``: that rounding packs
    two rows at a time (at least two rows per thread)."""
    # inputs: g, p, m, v, the two factors, the packed scalars, [grad_sum, x0], [the anchor's table];
    # outputs: the update or new p, m, v, [grad_sum, the two partial sums]
    inputs = 7 + (distance_decay is not None) * 2 + (anchor_size is not None)
    (g_ref, p_ref, m_ref, v_ref, rf_ref, cf_ref, s_ref, *extra), outputs = refs[:inputs], refs[inputs:]
    table_ref = extra.pop() if anchor_size is not None else None
    gs_ref, x0_ref = extra if distance_decay is not None else (None, None)
    out_ref, m_out, v_out, *distance_out = outputs
    gs_out, dot_out, l1_out = distance_out if distance_decay is not None else (None, None, None)
    block_inputs = functools.partial(
        _block_inputs, (g_ref, p_ref, m_ref, v_ref, rf_ref, cf_ref, gs_ref, x0_ref), n=n,
        shape=shape, d0=d0, d1=d1, k=len(decays), block=block, distance=distance_decay is not None)

    def load(index):
        return {name: fn() for name, fn in block_inputs(index=index).items()}

    def read_head():  # the packed scalars before the network's weights (:func:`_pack`)
        return [s_ref[i] for i in range(head_size)]

    step = functools.partial(
        _block_step, s_ref=s_ref, out_refs=(out_ref, m_out, v_out, gs_out), n=n, decays=decays, b2=b2,
        eps=eps, clip=clip, update_clip=update_clip, hidden=hidden, block=block, apply=apply,
        distance_decay=distance_decay, anchored=anchored, folded=folded, salt=salt,
        anchor=None if table_ref is None else (table_ref, anchor_size), half=half, ptx=ptx, paired=paired)
    if programs is None:
        def write_sums(dot, l1):  # this program's partial sums, where they are computed
            program = pl.program_id(0)
            dot_out[program] = jnp.sum(dot())
            l1_out[program] = jnp.sum(l1())

        # Every load before the first store: a load placed after a store stays after it (the
        # compilers cannot prove they touch different memory), so loading each input where it is
        # first used chained the block's loads into ~6 round trips to memory, one after another.
        inputs = load(None)
        step(inputs.__getitem__, index=None, partial_sums=write_sums, head=read_head())
        return

    pid = pl.program_id(0)

    def body(i, carry):
        current, terms = carry
        index = pid + i * programs
        upcoming = load(index + programs)  # issued before this block's arithmetic
        # read in every iteration, before its stores (cache hits): held across the loop instead,
        # they cost 8 more registers (64 instead of 56, folded pretrained step at 128 x 4)
        head = read_head()
        block_terms = []
        step(current.__getitem__, index=index, head=head,
             partial_sums=lambda dot, l1: block_terms.extend((dot(), l1())))
        return upcoming, tuple(a + b for a, b in zip(terms, block_terms))

    zeros = () if distance_decay is None else (jnp.zeros((block,), _f32), jnp.zeros((block,), _f32))
    iterations = pl.cdiv(pl.cdiv(n, block), programs)  # blocks past the last are fully masked
    _, terms = jax.lax.fori_loop(0, iterations, body, (load(pid), zeros))
    if distance_decay is not None:
        dot_out[pid], l1_out[pid] = (jnp.sum(t) for t in terms)


def _block_step(fetch, *, index, partial_sums, head, s_ref, out_refs, n, decays, b2, eps, clip,
                update_clip, hidden, block, apply, distance_decay, anchored, folded, salt, anchor, half=None,
                ptx=False, paired=False):
    """Computes and stores block ``index`` (``None``: this program's) from its inputs
    (``fetch(name)``, names as in :func:`_block_inputs`) and the packed scalars before the network's
    weights (``head``, already read; the weights, unless ``folded``, are read from ``s_ref``). With
    the distance step it hands ``partial_sums`` the terms of the block's ``<g, x0 - p>`` and
    ``|new sum|_1`` (one per row, 0 past the end), as functions computing them. ``anchor``:
    ``None``, or ``(table ref, size)`` of the anchored direction's lookup table."""
    out_ref, m_out, v_out, gs_out = out_refs
    # Stored state keeps its old value where the new one is not finite, the update is 0 there
    # (lopt.learned.mask_non_finite, here in the same pass); the step itself uses the new values.
    # (The XLA path reads the kept values and zeroes the update where g**2 is not finite: the same
    # result except where a finite |g| > 1.8e19 meets an unanchored direction: the update is then
    # the network's output at zero gradient inputs here, and 0 there.)
    # bfloat16 state (salt is not None): stored values are rounded stochastically with the bits of
    # lopt.learned.stochastic_rounding, from this entry's (global) index, the step (the first packed
    # scalar) and the tensor's salt, exactly as the XLA path rounds them.
    finite_or = functools.partial(tiles.finite_or, ptx=ptx)
    if salt is None:
        def stored(x, role):
            return x
    else:
        bits = SR.random_bits(tiles.row_ids(block, index=index).astype(jnp.uint32),
                              head[0].astype(jnp.uint32), salt)

        def stored(x, role):  # x: finite, or its stored value
            return bf16_rounding.to_bfloat16(x, SR.role_bits(bits, role), ptx=ptx, paired=paired)

    def store(ref, value, col=None):
        tiles.store_rows(ref, value, n, block, col=col, index=index)

    packed = iter(head[0 if salt is None else 1:])  # the packed scalars, in _pack's order

    def scalar():
        return next(packed)

    v_corr, p_rms = scalar(), scalar()
    m_corr = [scalar() for _ in decays]
    step_scale = scalar()
    g = fetch("g")
    p = fetch("p")
    parameter_input = jnp.clip(p / p_rms, -clip, clip)
    v_old = fetch("v")
    v = b2 * v_old + (1.0 - b2) * (g * g)
    store(v_out, stored(finite_or(v, v_old), len(decays)))
    if anchor is not None:
        # After the first store, so the compilers keep its 7 dependent probes after the block's
        # loads (placed before it, they were scheduled between the load of p and the others: a
        # second round trip to memory); the network's arithmetic hides their latency.
        table_ref, size = anchor
        anchor_direction = anchor_table.lookup(lambda i: table_ref[i], parameter_input, size)
    ms = []
    for j, d in enumerate(decays):
        m_old = fetch(f"m{j}")
        m = d * m_old + (1.0 - d) * g
        store(m_out, stored(finite_or(m, m_old), j), col=j)
        ms.append(m)
    row_factor, col_factor = fetch("factors")

    offset = itertools.count(len(head))  # where the network's weights start, when they are loaded

    # The network's weights after the first layer's bias: compiled in as constants when the caller
    # folded them (a fixed theta), else read from the packed scalars like everything else.
    constants = iter(folded) if folded is not None else None

    def weight():
        return s_ref[next(offset)] if constants is None else next(constants)

    if distance_decay is not None:
        # Rows past the end load as 0, so they add nothing to either partial sum.
        grad_sum_old = fetch("grad_sum")
        grad_sum = distance_decay * grad_sum_old + scalar() * g
        store(gs_out, stored(finite_or(grad_sum, grad_sum_old), len(decays) + 1))
        partial_sums(lambda: g * (fetch("x0") - p), lambda: jnp.abs(grad_sum))
    precond = 1.0 / (jnp.sqrt(v * v_corr) + eps)
    moments = [m * c * precond for m, c in zip(ms, m_corr)]
    inputs = [g * precond, *moments, g * (row_factor * col_factor)]
    if half is None:
        inputs = [*(jnp.clip(x, -clip, clip) for x in inputs), parameter_input]
    else:  # the network in float16: each input rounded (a value past float16's range becomes +-inf),
        # then clipped to +-clip as a pair of float16 values (the same values as clipping first)
        inputs = [*(jnp.clip(x.astype(jnp.float16), -clip, clip) for x in inputs),
                  parameter_input.astype(jnp.float16)]

    def layer(fan_in, width, bias_first=False):  # (w[i][j], bias[j]) in the order _pack wrote them
        if bias_first:  # first layer: bias = b0 + context (it moves with the step), packed before w0
            bias = [scalar() for _ in range(width)]
        w = [[weight() for _ in range(width)] for _ in range(fan_in)]
        if not bias_first:
            bias = [weight() for _ in range(width)]
        return w, bias

    def dense(xs, weights, relu=False):  # each sum starts at its bias: every product is one fused multiply-add
        w, bias = weights
        out = []
        for j in range(len(bias)):
            acc = bias[j]
            if half is not None:  # two parameters per instruction on the GPU, the last one with the ReLU
                acc = packed_half.broadcast(acc, xs[0].shape)
                for i, (x, w_row) in enumerate(zip(xs, w)):
                    acc = packed_half.fma(x, w_row[j], acc, packed=half == "packed", relu=relu and i == len(xs) - 1)
            else:
                for x, w_row in zip(xs, w):
                    acc = acc + x * w_row[j]
                acc = jax.nn.relu(acc) if relu else acc
            out.append(acc)
        return out

    layers = [layer(len(inputs), hidden, bias_first=True), layer(hidden, hidden), layer(hidden, 2)]

    def network(h):  # from the first hidden layer's activations
        return dense(dense(h, layers[1], relu=True), layers[2])

    if anchored:  # NominalLOpt.anchored_direction: minus the network at zero gradient inputs
        # the anchor's first layer (parameter input and bias) is where the full one's sums start
        w0, b0 = layers[0]
        first = dense(inputs[-1:], (w0[-1:], b0))  # the anchor's first layer, before its ReLU
        direction, log_scale = network(dense(inputs[:-1], (w0[:-1], first), relu=True))
        anchor_direction = network([jax.nn.relu(x) for x in first])[0] if anchor is None else anchor_direction
        direction = direction.astype(_f32) - anchor_direction.astype(_f32)
    else:
        direction, log_scale = network(dense(inputs, layers[0], relu=True))
    direction, log_scale = direction.astype(_f32), log_scale.astype(_f32)
    combined = jnp.clip(moments[0] + direction, -update_clip, update_clip)
    update = finite_or(-step_scale * combined * jnp.exp(jnp.clip(log_scale, -4.0, 4.0)), 0.0)
    update = update.astype(out_ref.dtype)
    store(out_ref, (p + update.astype(_f32)) if apply else update)


_FOLDED_WEIGHTS = ("w0", "w1", "b1", "w2", "b2")  # the kernel reads them in this order after b0


def folded_weights(theta: Any) -> tuple[float, ...] | None:
    """The network weights the kernel can compile in as constants, or ``None`` if theta is traced.

    A deployed optimizer's theta is fixed (for example :func:`lopt.pretrained.optimizer` closes over
    it), so inside ``jit`` its arrays are concrete. Compiled in, the ~140 weights of the network
    after its first bias become immediate operands of the multiply-adds instead of ~140 scalar loads
    per program and the registers that hold them. Under meta-training theta is traced (an argument,
    or batched by ``vmap``) and the kernel loads the weights as before. The first layer's bias moves
    with the step (it includes the time context), so it is always loaded.

    Example:
        >>> import jax
        >>> from lopt.learned import NominalLOpt
        >>> theta = NominalLOpt().init(jax.random.key(0))
        >>> len(folded_weights(theta))  # 6x8 + 8x8 + 8 + 8x2 + 2
        138
        >>> bool(jax.jit(lambda th: folded_weights(th) is None)(theta))  # traced: nothing to fold
        True
    """
    parts = [theta["network"][k] for k in _FOLDED_WEIGHTS]
    if any(isinstance(x, jax.core.Tracer) for x in parts):
        return None
    return tuple(float(v) for x in parts for v in np.asarray(x, np.float32).ravel())


def _pack(lopt, theta, t, lr, bias, shape, p_rms, weight, folded, rounding):
    """Per-tensor scalars, in the order the kernel reads them (``weight``: the distance estimate's
    weight ``w_t``, or ``None`` without one; ``bias``: the first layer's this step;
    ``folded``: the network weights are compiled in, so
    only the first layer's bias is packed of the network; ``rounding``: bfloat16 state, whose
    stochastic rounding needs the step count ``t``, packed first). Returns them and how many come
    before the network's weights (the kernel reads those before any store)."""
    net = theta["network"]
    decays = jnp.asarray(lopt.decays, _f32)
    head = [*([t] if rounding else []), 1.0 / (1.0 - lopt.b2 ** t), p_rms + 1e-8, 1.0 / (1.0 - decays ** t),
            lr * nominal._tensor_multiplier(theta, shape), *([] if weight is None else [weight]), bias]
    head = jnp.concatenate([jnp.ravel(jnp.asarray(x, _f32)) for x in head])
    weights = [] if folded else [jnp.ravel(jnp.asarray(net[k], _f32)) for k in _FOLDED_WEIGHTS]
    return jnp.concatenate([head, *weights]), head.size


def _fused_tensor(lopt, cfg, interpret, apply, has_horizon, folded, leaf, g, p, m, v, row, col, dist,
                  theta, count, num_steps):
    """One factored tensor through the kernel. ``dist``: ``None``, or the distance estimate's
    ``(grad_sum, x0, d)`` for this tensor; then the result ends with ``(new grad_sum, <g, x0 - p>,
    ||new grad_sum||_1)`` (else ``None``). ``folded``: :func:`folded_weights` of theta, or ``None``;
    ``leaf``: the tensor's position in the tree (the stochastic rounding's salt of bfloat16 state)."""
    shape, n = g.shape, g.size
    d1, d0 = F.factored_dims(shape)
    t, lr, time_context = _step_scalars(lopt, theta, count + 1, num_steps if has_horizon else None)
    if cfg.statistics == "kernel" and factored_stats.applies(shape):  # one pass: g and p read once
        over_last, over_second_last, p_square = factored_stats.factored_means(g, p, interpret=interpret,
                                                                              cfg=cfg)
        over_d0, over_d1 = ((over_last, over_second_last) if d0 == g.ndim - 1
                            else (over_second_last, over_last))
        over_d0, over_d1 = over_d0[..., None] + _FACTORED_EPS, over_d1[..., None] + _FACTORED_EPS
    else:  # three XLA reductions: g read twice, p once
        g2 = jnp.square(g.astype(_f32))[..., None] + _FACTORED_EPS
        over_d0, over_d1 = jnp.mean(g2, axis=d0), jnp.mean(g2, axis=d1)
        p_square = jnp.mean(jnp.square(p.astype(_f32)))
    fd = lopt.factored_decay
    acc = F.FactoredAccumulator(fd * row + (1.0 - fd) * over_d0, fd * col + (1.0 - fd) * over_d1, None)
    row_factor, col_factor = F.factored_scale_factors(acc, shape)
    p_rms = jnp.sqrt(p_square)
    weight = None
    if dist is not None:  # NominalLOpt's distance step: base step lr * d, sums weighted d**2 * lr
        weight, lr = jnp.square(dist[2]) * lr, lr * dist[2]
    rounding = lopt.state_dtype == "bfloat16"
    bias = nominal._first_layer_bias(theta["network"], time_context, shape)
    scalars, head_size = _pack(lopt, theta, t, lr, bias, shape, p_rms, weight, folded is not None,
                               rounding)
    k = len(lopt.decays)
    use_table = lopt.anchored_direction and cfg.anchor == "table"
    kernel = functools.partial(
        _kernel, n=n, shape=shape, d0=d0, d1=d1, decays=lopt.decays, b2=lopt.b2, eps=lopt.eps,
        clip=lopt.input_clip, update_clip=lopt.update_clip, hidden=lopt.hidden_size,
        block=cfg.block, apply=apply, distance_decay=None if dist is None else lopt.distance_decay,
        anchored=lopt.anchored_direction, folded=folded,
        salt=leaf if rounding else None, programs=cfg.programs, head_size=head_size,
        anchor_size=anchor_table.table_size(lopt.hidden_size) if use_table else None,
        half=None if cfg.network == "float32" else "emulated" if interpret else "packed", ptx=not interpret,
        paired=cfg.block >= 64 * cfg.num_warps)
    outputs = [jax.ShapeDtypeStruct((n,), jnp.result_type(p)), jax.ShapeDtypeStruct((n, k), m.dtype),
               jax.ShapeDtypeStruct((n,), v.dtype)]
    inputs = [g.reshape(n), p.reshape(n), m.reshape(n, k), v.reshape(n), row_factor.reshape(-1),
              col_factor.reshape(-1), scalars]
    # the state is updated in place; so are the params when the kernel writes them (apply): each
    # program reads its block before its first store, and the new params need no buffer of their own
    aliases = {2: 1, 3: 2, **({1: 0} if apply else {})}
    if dist is not None:
        programs = tiles.program_count(n, cfg.block, cfg)  # one partial sum per program
        outputs += [jax.ShapeDtypeStruct((n,), dist[0].dtype), jax.ShapeDtypeStruct((programs,), _f32),
                    jax.ShapeDtypeStruct((programs,), _f32)]
        inputs += [dist[0].reshape(n), dist[1].reshape(n)]
        aliases[7] = 3
    if use_table:  # the anchored direction, a piecewise-linear function of the parameter input
        net = theta["network"]
        inputs.append(anchor_table.table(net["w0"][-1], bias, net["w1"], net["b1"], net["w2"][:, 0],
                                         net["b2"][0], clip=lopt.input_clip))
    call = tiles.call(kernel, outputs, rows=n, block=cfg.block, cfg=cfg, interpret=interpret,
                      aliases=aliases, name="lopt_nominal_step", persistent=True)
    out, m_new, v_new, *rest = call(*inputs)
    dist_out = None
    if dist is not None:
        grad_sum, dots, l1s = rest
        dist_out = (grad_sum.reshape(shape), jnp.sum(dots), jnp.sum(l1s))
    _, (new_row, new_col) = base.mask_non_finite({}, (acc.row, acc.col), (row, col))
    return out.reshape(shape), m_new.reshape(m.shape), v_new.reshape(shape), new_row, new_col, dist_out


def _reference_leaf(lopt, apply, has_horizon, leaf, g, p, m, v, acc, dist, theta, count, num_steps):
    """One tensor through :class:`NominalLOpt`'s own XLA update (``count`` before the step);
    ``dist`` and the last result as in :func:`_fused_tensor`."""
    distance = None
    if dist is not None:
        grad_sum, x0, d = dist
        distance = D.DistanceState(d, jnp.zeros((), _f32), {"x": grad_sum}, {"x": x0})
    state = nominal.NominalState(count, {"x": m}, {"x": v}, {"x": acc}, distance)
    # the XLA path, whatever the kernel mode or the optimizer's own kernel option
    impl = lopt.with_execution_options(kernel="xla")._build(theta, num_steps if has_horizon else None,
                                                            leaf_offset=leaf)
    updates, new = impl.update({"x": g}, state, {"x": p}, None, None)
    update = updates["x"].astype(jnp.result_type(p))
    dist_out = None
    if dist is not None:
        # ||new sum||_1 of the raw float32 sum, before a bfloat16 state's rounding, as the kernel's
        # pass takes it (the whole-tree XLA step takes it of the sum with non-finite entries kept
        # old: the same estimate, lopt.learned.distance.update says why)
        _, lr, _ = _step_scalars(lopt, theta, count + 1, num_steps if has_horizon else None)
        exact = D.next_grad_sum(grad_sum, g, weight=jnp.square(d) * lr, decay=lopt.distance_decay)
        dist_out = (new.distance.grad_sum["x"], jnp.vdot(g.astype(_f32), x0.astype(_f32) - p.astype(_f32)),
                    jnp.sum(jnp.abs(exact)))
    return ((p + update if apply else update), new.momentum["x"], new.rms["x"], new.factored["x"],
            dist_out)


def _reference_tensor(lopt, apply, has_horizon, leaf, g, p, m, v, row, col, dist, theta, count,
                      num_steps):
    """:func:`_reference_leaf` for a factored tensor, with :func:`_fused_tensor`'s signature."""
    out, m_new, v_new, acc, dist_out = _reference_leaf(
        lopt, apply, has_horizon, leaf, g, p, m, v, F.FactoredAccumulator(row, col, None), dist, theta,
        count, num_steps)
    return out, m_new, v_new, acc.row, acc.col, dist_out


def nominal_update(
    lopt: Any,
    theta: Any,
    num_steps: Any,
    grads: Any,
    state: Any,
    params: Any,
    *,
    interpret: bool,
    apply: bool = False,
    cfg: tiles.KernelConfig | None = None,
    fold_weights: bool = True,
) -> tuple[Any, Any]:
    """One fused :class:`NominalLOpt` step: ``(updates or new params, new NominalState)``.

    Non-finite entries are handled as :func:`lopt.learned.mask_non_finite` does, inside the
    kernel's pass: the update is 0 there and the state keeps its old value.

    Args:
        lopt: the config (must be :func:`supported`).
        theta: its meta-parameters.
        num_steps: the horizon or ``None`` (as given to ``lopt.optimizer``).
        grads, state, params: the step's gradient, :class:`NominalState` and parameters.
        interpret: Pallas interpret mode (CPU tests) instead of Triton.
        apply: return ``params + updates`` instead of the updates.
        cfg: launch settings (``None``: :data:`DEFAULT_CONFIG`).
        fold_weights: compile the network's weights into the kernel when theta is concrete
            (:func:`folded_weights`); ``False`` loads them in every program, as for a traced theta.
    """
    if not supported(lopt):
        raise ValueError(f"no fused kernel for {lopt!r}: hidden_size must be <= {_MAX_HIDDEN}; "
                         "use the XLA path (mode 'xla').")
    cfg = cfg or DEFAULT_CONFIG
    if cfg.network == "float16" and cfg.block < 64 * cfg.num_warps:
        raise ValueError(f"nominal_update: KernelConfig(network='float16') packs two rows per thread, so it "
                         f"needs block >= 64 * num_warps; got block={cfg.block}, num_warps={cfg.num_warps}. "
                         f"Use block={64 * cfg.num_warps} or more, or network='float32'.")
    has_horizon = num_steps is not None
    horizon = jnp.asarray(num_steps if has_horizon else 1.0, _f32)
    folded = folded_weights(theta) if fold_weights else None

    def fused(leaf, *args):  # per tensor: its position salts a bfloat16 state's rounding
        return tiles.with_reference_vjp(
            functools.partial(_fused_tensor, lopt, cfg, interpret, apply, has_horizon, folded, leaf),
            functools.partial(_reference_tensor, lopt, apply, has_horizon, leaf))(*args)

    flat_g, treedef = jax.tree.flatten(grads)
    flat = [treedef.flatten_up_to(x) for x in (params, state.momentum, state.rms)]
    flat_acc = treedef.flatten_up_to(state.factored)
    distance = state.distance
    if distance is None:
        flat_dist = [None] * len(flat_g)
    else:
        flat_dist = [(s, x0, distance.distance) for s, x0 in zip(
            treedef.flatten_up_to(distance.grad_sum), treedef.flatten_up_to(distance.params0))]
    results, dist_results = [], []
    for leaf, (g, p, m, v, acc, dist) in enumerate(zip(flat_g, *flat, flat_acc, flat_dist)):
        if g.ndim < 2 or g.size == 0:  # unfactored accumulator: the XLA path
            out, m_new, v_new, new_acc, dist_out = _reference_leaf(
                lopt, apply, has_horizon, leaf, g, p, m, v, acc, dist, theta, state.count, horizon)
        else:
            out, m_new, v_new, r, c, dist_out = fused(leaf, g, p, m, v, acc.row, acc.col, dist, theta,
                                                      state.count, horizon)
            new_acc = F.FactoredAccumulator(r, c, None)
        results.append((out, m_new, v_new, new_acc))
        dist_results.append(dist_out)
    pick = [treedef.unflatten([r[i] for r in results]) for i in range(4)]
    if distance is not None:
        _, lr, _ = _step_scalars(lopt, theta, state.count + 1, horizon if has_horizon else None)
        new = D.advance(
            distance, dot=sum(r[1] for r in dist_results),
            grad_sum=treedef.unflatten([r[0] for r in dist_results]),  # masked per entry already
            l1=sum(r[2] for r in dist_results), weight=jnp.square(distance.distance) * lr,
            decay=lopt.distance_decay)
        _, (estimate, numerator) = base.mask_non_finite(
            {}, (new.distance, new.numerator), (distance.distance, distance.numerator))
        distance = new._replace(distance=estimate, numerator=numerator)
    return pick[0], nominal.NominalState(state.count + 1, *pick[1:], distance)

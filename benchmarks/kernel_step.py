"""Fused Pallas learned-optimizer steps against the XLA path and ``optax.adam``, on one GPU.

One run does everything (it is meant for one short call on a rented GPU):

1. **Ceiling**: device-to-device bandwidth of a large elementwise pass (bytes read +
   written per second).
2. **Timing** at each size (params: 8 dense layers, as ``step_overhead.py``): one jitted
   step with params and state donated, ``optax.adam``; the architecture's XLA path through
   optax (``update`` + ``apply_updates``); the fused kernel through optax (mode
   ``pallas``: kernel writes the update, XLA applies it); and the fused kernel writing the
   new params itself (``apply=True``), for a few launch configs. Medians of repeated
   timed loops, alternating with Adam.
3. **Correctness** at a small size, after the timings (so a short call returns timings
   first), while ``--budget-s`` lasts (a correctness-only run, ``--sizes`` with no value,
   checks every architecture): the fused step (Triton) against the XLA path computed
   at ``highest`` matmul precision, next to the XLA path at its default precision (TF32 for
   float32 products on GPU); relative L2 error of the updates and of the new state; for ``mlp``
   also its kernel at ``tf32x3`` and ``bf16`` product precision (interpret mode on the CPU rounds
   the ``bf16`` operands as the GPU does; it computes ``tf32x3`` in float32). Also a vmapped
   step (2 tasks, 2 thetas) and ``jax.grad`` with respect to theta.

Reports ms per step, ratio to Adam, bytes per parameter the implementation must move and
the bandwidth that implies, as a fraction of the measured ceiling. With ``--profile``, each timed
variant is also profiled over 5 more steps (``jax_trace``): the device time per kernel (for
the pretrained step, its statistics pass against its main pass and XLA's small kernels), kept in
the variant's row and printed. Every row also holds ``hlo`` (``hlo_summary``): the compiled step's
kernel calls, fusions, copies and loops, the launches that cost time per step whatever the size.

Usage (on the GPU machine):
    PYTHONPATH=$PWD python3 benchmarks/kernel_step.py --sizes 1e8 1e7 --out $OUT/kernel_step.json \
        2>&1 | tee $OUT/kernel_step.log

Keep the log in ``$OUT`` (``tee``, not ``tail``): a device call killed at its limit returns only
what is there. The JSON is written after the bandwidth ceiling, after each correctness check
and after each timed variant. The correctness checks compile about seven programs per
architecture (XLA at two precisions, the kernel, vmap and grad of both); on a short call pass a
smaller ``--check-size`` or ``--check-size 0``. They run last, and only while ``--budget-s``
lasts (when they ran first, a 4-minute and a 5.5-minute call on the H200 ended inside them and
returned no timing).

Writes ``benchmarks/results/kernel_step_<device>.json`` without ``--out``.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import statistics
import sys
import tempfile
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(__file__))
import hlo_summary
import jax_trace
from common import default_path, refuse_existing_out, save
from step_overhead import NUM_LAYERS, make_params

import lopt.learned
import lopt.pretrained
from lopt import kernels
from lopt.kernels import mlp_step, nominal_step, tiles
from lopt.learned import features as F

HORIZON = 10_000
INTERPRET = jax.default_backend() != "gpu"  # CPU: a smoke run in Pallas interpret mode
ADAM_BYTES = 28  # read g, p, m, v; write p, m, v (float32)
ARCH_BYTES = {"mlp": (mlp_step.bytes_per_param(apply=False), mlp_step.bytes_per_param()),
              "nominal": (nominal_step.bytes_per_param(apply=False), nominal_step.bytes_per_param()),
              "pretrained": (nominal_step.bytes_per_param(apply=False, distance=True),
                             nominal_step.bytes_per_param(distance=True)),
              # the pretrained optimizer with its state in bfloat16 (stochastic rounding)
              "pretrained_bf16": (nominal_step.bytes_per_param(apply=False, distance=True, state_bytes=2),
                                  nominal_step.bytes_per_param(distance=True, state_bytes=2)),
              "mlp_bf16": (mlp_step.bytes_per_param(apply=False, state_bytes=2),
                           mlp_step.bytes_per_param(state_bytes=2))}
# The nominal kernel's persistent main pass (KernelConfig.programs): a fixed number of programs,
# each looping over blocks and loading the next while it computes the current one; 8 and 16
# programs per SM of an H100 (132 SMs). Named b{block}w{warps}p{programs}. Timed for the float32
# pretrained step only (each variant compiles for 16-26 s on a GPU: a default run that timed them
# for every nominal architecture would no longer reach mlp within its budget).
PERSISTENT = {f"b128w4p{p}": tiles.KernelConfig(128, 1024, 4, programs=p) for p in (132 * 8, 132 * 16)}
VARIANTS = {  # name: KernelConfig for the apply=True timing
    "mlp": {"b256w4": tiles.KernelConfig(256, 1024, 4), "b128w4": tiles.KernelConfig(128, 1024, 4),
            "b256w8": tiles.KernelConfig(256, 1024, 8),
            # TF32 products in two-warp programs: the launch that made bf16 products 8.5% faster (stop
            # 61), not yet timed at TF32
            "b128w2": tiles.KernelConfig(128, 256, 2),
            # the reduction pass in 256-row programs: 63 registers and 32 resident warps per SM
            # instead of 168 and 12 at 1,024 rows (benchmarks/kernel_sass.py; stop 57)
            "b128w4r256": tiles.KernelConfig(128, 256, 4), "b256w4r256": tiles.KernelConfig(256, 256, 4),
            # bfloat16 products (A operands from registers, no shared-memory round trip; the first,
            # 8-wide product TF32 since stop 59, tiles.BF16_MIN_K; the output layer a product and the
            # ReLUs packed bfloat16 since stop 60): 500 instructions per parameter and 128 registers
            # against tf32's 668 and 162 (kernel_sass --precision bf16, stop 60)
            "b256w4bf16": tiles.KernelConfig(256, 256, 4, precision="bf16"),
            # the same at 128 x 4: 75 registers, 24 resident warps per SM, 592 instructions per parameter
            # (on an H100 in stop 60: 5.66 ms against 256 x 4's 5.05; kept for the H200, where stop 56
            # found the main pass bound by instruction issue)
            "b128w4bf16": tiles.KernelConfig(128, 256, 4, precision="bf16"),
            # 512 x 8: 126 registers, 16 warps per SM, 488 instructions; 256 x 8: 74, 24, 576 (stop 60;
            # on an H100 7.14 and 5.52 ms: slower than 256 x 4)
            "b512w8bf16": tiles.KernelConfig(512, 256, 8, precision="bf16"),
            "b256w8bf16": tiles.KernelConfig(256, 256, 8, precision="bf16"),
            # one- and two-warp programs: Triton's mma.sync products instead of Hopper's warp-group
            # ones (no warp-group fences, barriers within a warp); Nsight Compute on the 256 x 4 main
            # pass (stop 61): 134 registers on the GPU's compiler, 3 programs per SM, 0.94 eligible
            # warps per scheduler, issue slots 53% busy. Static counts (kernel_sass, stop 61):
            # 128 x 1 188 registers, 10 warps per SM, 484 instructions per parameter; 64 x 1 122, 16,
            # 540; 128 x 2 112, 18, 528 (bfloat16 momenta: 558, 612, 656 against 256 x 4's 644)
            "b128w1bf16": tiles.KernelConfig(128, 256, 1, precision="bf16"),
            "b64w1bf16": tiles.KernelConfig(64, 256, 1, precision="bf16"),
            "b128w2bf16": tiles.KernelConfig(128, 256, 2, precision="bf16"),
            # each tensor's reduction pass inside the previous tensor's main pass launch, its programs
            # interleaved (stop 63): the main pass issues instructions about half its cycles (Nsight
            # Compute, stop 61) and moves 36 of its 56 bytes per parameter, so the reduction's memory
            # traffic can run beside it; 110 registers as the main pass alone (kernel_sass
            # --reduction overlapped --reduce-block 256); not yet timed
            "b128w2bf16ov": tiles.KernelConfig(128, 256, 2, precision="bf16", reduction="overlapped"),
            "b128w2ov": tiles.KernelConfig(128, 256, 2, reduction="overlapped"),
            "b64w2bf16": tiles.KernelConfig(64, 256, 2, precision="bf16"),
            "b256w2bf16": tiles.KernelConfig(256, 256, 2, precision="bf16"),
            # the same two-warp launch persistent (the next block's loads in flight against the main
            # pass's load stalls, 20% of its cycles in stop 61): 142 registers, 7 programs per SM, so
            # 924 programs on an H100's 132 SMs; not yet timed
            "b128w2p924bf16": tiles.KernelConfig(128, 256, 2, precision="bf16", programs=924),
            # the persistent main pass (stop 57): the next block's loads in flight during the
            # current block's products; 125 registers, 16 resident warps per SM at 128 x 4
            **{f"b128w4p{p}": tiles.KernelConfig(128, 1024, 4, programs=p) for p in (132 * 8, 132 * 16)}},
    # nominal_step.DEFAULT_CONFIG (512 x 4) first, then the two earlier defaults
    "nominal": {"b512w4": tiles.KernelConfig(512, 1024, 4), "b256w4": tiles.KernelConfig(256, 1024, 4),
                "b128w4": tiles.KernelConfig(128, 1024, 4),
                # the network in packed float16, two parameters per fma.rn.f16x2 (stop 63): the pretrained
                # step folded 402 -> 294 static instructions per parameter, loaded 434 -> 340 and 168 -> 128
                # registers (kernel_sass --network float16); not yet timed
                "b512w4h16": tiles.KernelConfig(512, 1024, 4, network="float16"),
                # the same at 256 x 4: 55 registers, 36 resident warps per SM, 336 instructions (folded)
                "b256w4h16": tiles.KernelConfig(256, 1024, 4, network="float16")},
}
# The stop-55 alternatives of the pretrained step's main pass at the default launch: XLA's three
# reductions for the statistics (12 B instead of the statistics kernel's 8; otherwise the stop-54
# kernel but for each dense sum starting at its bias), and the anchored direction from its table
# instead of a second network pass (40 fewer instructions per parameter).
ALTERNATIVES = {"b512w4_xla_statistics": tiles.KernelConfig(512, 1024, 4, statistics="xla"),
                "b512w4_table_anchor": tiles.KernelConfig(512, 1024, 4, anchor="table")}
VARIANTS["pretrained"] = {**VARIANTS["nominal"], **ALTERNATIVES, **PERSISTENT}
# --sweep: a grid of launch configs per architecture instead (block, warps; mlp also its
# reduction block), to choose the defaults from in one call
SWEEP = {
    "mlp": [(64, 1024, 2), (64, 1024, 4), (128, 1024, 2), (128, 1024, 4), (128, 2048, 4),
            (128, 4096, 8), (256, 1024, 4), (256, 2048, 8), (512, 2048, 8)],
    "nominal": [(b, 1024, w) for b in (128, 256, 512, 1024, 2048) for w in (2, 4, 8)
                if 32 * w <= b],
}
SWEEP["pretrained"] = SWEEP["pretrained_bf16"] = SWEEP["nominal"]
VARIANTS["pretrained_bf16"] = VARIANTS["nominal"]
VARIANTS["mlp_bf16"], SWEEP["mlp_bf16"] = VARIANTS["mlp"], SWEEP["mlp"]


def launch_configs(arch, sweep):
    """``{name: KernelConfig}`` timed with ``apply=True`` for ``arch``."""
    if not sweep:
        return VARIANTS[arch]
    return {f"b{b}r{r}w{w}" if arch.startswith("mlp") else f"b{b}w{w}": tiles.KernelConfig(b, r, w)
            for b, r, w in SWEEP[arch]}


def random_tree(tree, seed, scale=1.0):
    leaves, treedef = jax.tree.flatten(tree)
    rng = np.random.default_rng(seed)
    return treedef.unflatten([jnp.asarray(rng.standard_normal(x.shape, np.float32) * scale)
                              for x in leaves])


def random_momentum(momentum):
    """Random momenta (scale 0.1) shaped and typed as ``momentum`` (bfloat16 state too)."""
    return jax.tree.map(lambda r, m: r.astype(m.dtype), random_tree(momentum, 2, 0.1), momentum)


def learned_optimizer(arch):
    """The architecture's default config; ``pretrained``: the shipped weights' config
    (``pretrained_bf16``, ``mlp_bf16``: with the state stored in bfloat16)."""
    if arch == "pretrained_bf16":
        return lopt.pretrained.load()[1].with_execution_options(state_dtype="bfloat16")
    if arch == "mlp_bf16":
        return lopt.learned.get("mlp", state_dtype="bfloat16")
    return lopt.pretrained.load()[1] if arch == "pretrained" else lopt.learned.get(arch)


def trained_like_theta(arch, lo):
    """theta with every part active (nominal's init has a zero last layer); ``pretrained``: the
    shipped weights (nominal with the distance step)."""
    if arch.startswith("pretrained"):
        return lopt.pretrained.load()[0]
    theta = lo.init(jax.random.key(0))
    if arch == "nominal":
        theta["network"]["w2"] = 0.5 * jax.random.normal(jax.random.key(1), theta["network"]["w2"].shape)
        theta["schedule"] = jnp.linspace(-1.0, 1.0, lo.schedule_knots)
    return theta


def fused_apply_step(arch, lo, cfg, fixed_theta=None):
    """``step(params, state, theta, grads) -> (params, state)`` with the kernel writing params.

    ``fixed_theta`` (``nominal``, ``pretrained``): close over this theta instead of the argument, so
    the kernel compiles its network weights in (:func:`lopt.kernels.nominal_step.folded_weights`),
    as a deployed optimizer's step does; an argument is traced and its weights are loaded."""
    if arch.startswith("mlp"):
        def step(params, state, theta, grads):
            context = F.tanh_time_embedding(state.count, lo.time_scales)
            new_p, m = mlp_step.mlp_update(lo, theta["mlp"], context, grads, state.momentum, params,
                                           interpret=INTERPRET, apply=True, cfg=cfg, step=state.count + 1)
            return new_p, type(state)(state.count + 1, m)
        return step

    def step(params, state, theta, grads):
        theta = theta if fixed_theta is None else fixed_theta
        return nominal_step.nominal_update(lo, theta, HORIZON, grads, state, params,
                                           interpret=INTERPRET, apply=True, cfg=cfg)
    return step


def two_tensors(n, scale=1.0):
    """``{"w", "v"}``: ``n`` random normal parameters (times ``scale``) in two ``[n / 2048, 1024]`` tensors,
    the same draw every time.

    Example:
        >>> sorted((k, v.shape) for k, v in two_tensors(4096).items())
        [('v', (2, 1024)), ('w', (2, 1024))]
    """
    rng = np.random.default_rng(0)
    return {name: jnp.asarray(rng.standard_normal((n // 2048, 1024), np.float32) * scale) for name in "wv"}


def variant_error(lo, theta, cfg, n=1 << 20):
    """``mlp``'s fused update at launch ``cfg`` against its XLA path in float32 (highest product
    precision), one step on ``n`` parameters in two tensors (so that ``reduction="overlapped"`` runs the
    second's reduction in the first's main pass launch) with random momenta: the relative error of the
    update, so that a launch config's time never comes without its accuracy on the same GPU."""
    params = two_tensors(n)
    grads = random_tree(params, 1)
    state = lo.optimizer(theta, num_steps=HORIZON).init(params)
    momentum = random_momentum(state.momentum)
    context = F.tanh_time_embedding(state.count, lo.time_scales)
    fused, _ = jax.jit(lambda g, m, p: mlp_step.mlp_update(
        lo, theta["mlp"], context, g, m, p, interpret=INTERPRET, cfg=cfg, step=state.count + 1))(
        grads, momentum, params)
    with jax.default_matmul_precision("highest"):
        ref, _ = jax.jit(lambda g, m, p: mlp_step.mlp_update_reference(
            lo, theta["mlp"], context, g, m, p, step=state.count + 1))(grads, momentum, params)
    return rel(fused, ref)


def nominal_variant_error(lo, theta, cfg, n=1 << 20):
    """The ``nominal`` step's (and the pretrained optimizer's) fused update at launch ``cfg`` against
    its XLA path in float32, one step on ``n`` parameters in two tensors from the state three XLA steps
    leave: the relative error of the update (``KernelConfig(network="float16")``'s rounding, ~4e-4)."""
    params = two_tensors(n, 0.05)
    xla = jax.jit(lo.with_execution_options(kernel="xla").optimizer(theta, num_steps=HORIZON).update)
    state = lo.optimizer(theta, num_steps=HORIZON).init(params)
    for seed in range(3):
        _, state = xla(random_tree(params, 10 + seed), state, params)
    grads = random_tree(params, 20)
    fused, _ = jax.jit(lambda g, st, p: nominal_step.nominal_update(
        lo, theta, HORIZON, g, st, p, interpret=INTERPRET, cfg=cfg))(grads, state, params)
    with jax.default_matmul_precision("highest"):
        ref, _ = xla(grads, state, params)
    return rel(fused, ref)


def apply_bytes(arch, cfg):
    """Bytes per parameter of ``arch``'s kernel writing params at launch ``cfg``: a nominal step whose
    statistics come from XLA's reductions reads ``g`` once more (4 B)."""
    extra = 4 if not arch.startswith("mlp") and cfg.statistics == "xla" else 0
    return ARCH_BYTES[arch][1] + extra


def timed_variants(arch, lo, theta, sweep=False):
    """``[(name, step, kernel mode, bytes per parameter or None)]`` of ``arch``, in the order they run:
    the XLA path (not in a sweep), the kernel through optax, the kernel writing params per launch
    config, and for ``nominal``/``pretrained`` the same two with theta's weights compiled in."""
    build = lambda th: lo.optimizer(th, num_steps=HORIZON)
    configs = launch_configs(arch, sweep).items()
    variants = [] if sweep else [("xla", optax_step(build), "xla", None)]
    variants += [("fused_optax", optax_step(build), "pallas", ARCH_BYTES[arch][0])]
    variants += [(f"fused_apply_{name}", fused_apply_step(arch, lo, cfg), "xla", apply_bytes(arch, cfg))
                 for name, cfg in configs]
    if not arch.startswith("mlp"):  # the weights compiled in (a fixed theta), through optax and written directly
        variants += [("fused_optax_folded", optax_step(build, theta), "pallas", ARCH_BYTES[arch][0])]
        variants += [(f"fused_apply_folded_{name}", fused_apply_step(arch, lo, cfg, theta), "xla",
                      apply_bytes(arch, cfg)) for name, cfg in configs]
    return variants


def variant_names(arch, sweep=False):
    """The names of :func:`timed_variants` of ``arch`` (what ``--variants`` patterns match).

    Example:
        >>> variant_names("mlp")[:5]
        ['xla', 'fused_optax', 'fused_apply_b256w4', 'fused_apply_b128w4', 'fused_apply_b256w8']
    """
    lo = learned_optimizer(arch)
    return [v[0] for v in timed_variants(arch, lo, trained_like_theta(arch, lo), sweep)]


def optax_step(build, fixed_theta=None):
    """``opt.update`` + ``optax.apply_updates``: the fused kernel when traced in mode 'pallas'
    (``fixed_theta``: built from this concrete theta, as a deployed optimizer is, not the argument)."""
    def step(params, state, theta, grads):
        theta = theta if fixed_theta is None else fixed_theta
        updates, state = build(theta).update(grads, state, params, loss=jnp.float32(1.0))
        return optax.apply_updates(params, updates), state
    return step


class Timed:
    """A compiled, donated step and its running (params, state)."""

    def __init__(self, step, params, state, theta, grads, mode="xla"):
        with kernels.mode_scope(mode):
            start = time.perf_counter()
            self.fn = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, theta, grads).compile()
            self.compile_s = time.perf_counter() - start
        self.p, self.s = jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, state)
        self.args = (theta, grads)

    def run(self, n=1):
        jax.block_until_ready((self.p, self.s))
        start = time.perf_counter()
        for _ in range(n):
            self.p, self.s = self.fn(self.p, self.s, *self.args)
        jax.block_until_ready((self.p, self.s))
        return (time.perf_counter() - start) / n

    def finite(self):
        return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves((self.p, self.s)))


def copy_bandwidth(n=1 << 28):
    x = jnp.ones((n,), jnp.float32)
    f = jax.jit(lambda x: x * 1.0001 + 1e-7)
    jax.block_until_ready(f(x))
    times = []
    for _ in range(10):
        start = time.perf_counter()
        jax.block_until_ready(f(x))
        times.append(time.perf_counter() - start)
    return 2 * 4 * n / statistics.median(times)


def rel(a, b):
    a = np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(a)])
    b = np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(b)])
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def correctness(arch, lo, n):
    """Fused vs XLA (highest precision) at one step; vmap and grad agreement."""
    params = make_params(n)
    params["odd"] = jnp.linspace(-1.0, 1.0, 3 * 5 * 7 * 11).reshape(3, 5, 7, 11)  # rank 4, odd
    grads, theta = random_tree(params, 1), trained_like_theta(arch, lo)
    opt = lo.optimizer(theta, num_steps=HORIZON)
    state = opt.init(params)
    state = state._replace(momentum=random_momentum(state.momentum))
    xla = jax.jit(lambda g, s, p, th: lo.optimizer(th, num_steps=HORIZON).update(g, s, p, loss=1.0))
    with jax.default_matmul_precision("highest"):
        ref = jax.jit(lambda g, s, p, th: lo.optimizer(th, num_steps=HORIZON).update(
            g, s, p, loss=1.0))(grads, state, params, theta)
    default = xla(grads, state, params, theta)
    with kernels.mode_scope("pallas"):
        def fused_step(lopt_):
            return jax.jit(lambda g, s, p, th: lopt_.optimizer(th, num_steps=HORIZON).update(
                g, s, p, loss=1.0))(grads, state, params, theta)

        fused = fused_step(lo)
        by_precision = {  # mlp's kernel at its other product precisions (an execution option)
            precision: fused_step(lo.with_execution_options(kernel_precision=precision))
            for precision in (("tf32x3", "bf16") if arch.startswith("mlp") else ())}
    out = {"n_params": sum(x.size for x in jax.tree.leaves(params)),
           "update_rel_err_fused": rel(fused[0], ref[0]),
           "update_rel_err_xla_default": rel(default[0], ref[0]),
           "state_rel_err_fused": rel(fused[1], ref[1])}
    for precision, (update, _) in by_precision.items():
        out[f"update_rel_err_fused_{precision}"] = rel(update, ref[0])

    # vmap over 2 tasks and 2 thetas, and grad with respect to theta, at a small size.
    small = {"w": jnp.ones((300, 70)) * 0.1, "b": jnp.zeros(70)}
    thetas = jax.vmap(lambda k: trained_like_theta(arch, lo))(jnp.arange(2))
    thetas = jax.tree.map(lambda t: t * jnp.asarray([1.0, 0.9]).reshape(-1, *[1] * (t.ndim - 1)), thetas)
    g2 = jax.vmap(lambda s: random_tree(small, 3, 1.0))(jnp.arange(2))
    s0 = lo.optimizer(theta, num_steps=HORIZON).init(small)

    def one(th, g, mode):
        with kernels.mode_scope(mode):
            return lo.optimizer(th, num_steps=HORIZON).update(g, s0, small, loss=1.0)

    g_one = jax.tree.map(lambda x: x[0], g2)
    weights = random_tree(small, 4)

    def loss(th, mode):
        updates, new_state = one(th, g_one, mode)
        return jnp.sum(updates["w"] * weights["w"]) + jnp.sum(jnp.tanh(new_state.momentum["w"]))

    with jax.default_matmul_precision("highest"):
        vx = jax.jit(jax.vmap(lambda th, g: one(th, g, "xla")))(thetas, g2)
        gx = jax.jit(jax.grad(lambda th: loss(th, "xla")))(theta)
    vf = jax.jit(jax.vmap(lambda th, g: one(th, g, "pallas")))(thetas, g2)
    gf = jax.jit(jax.grad(lambda th: loss(th, "pallas")))(theta)
    out["vmap_update_rel_err"] = rel(vf[0], vx[0])
    out["grad_theta_rel_err"] = rel(gf, gx)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=float, nargs="*", default=[1e8, 1e7],
                        help="parameter counts to time (none: correctness only)")
    parser.add_argument("--archs", nargs="+", default=["mlp", "nominal", "pretrained"],
                        choices=sorted(ARCH_BYTES))
    parser.add_argument("--loops", type=int, default=10, help="steps per timed loop")
    parser.add_argument("--repeats", type=int, default=5, help="timed loops per variant")
    parser.add_argument("--budget-s", type=float, default=150.0, help="skip variants after this")
    parser.add_argument("--check-size", type=int, default=3_000_000,
                        help="parameters of the correctness check (0: skip it)")
    parser.add_argument("--sweep", action="store_true",
                        help="time a grid of launch configs (block, warps) per architecture")
    parser.add_argument("--variants", nargs="+", default=None, metavar="PATTERN",
                        help="time only the variants whose names match one of these shell patterns "
                             "(e.g. 'fused_apply_folded_*' 'xla'); Adam is always timed")
    parser.add_argument("--profile", action="store_true",
                        help="after timing each variant, profile 5 more steps of it and record and print the "
                             "device time per kernel (jax.profiler; e.g. the statistics pass against the main pass)")
    parser.add_argument("--out", default=None, help="write the JSON here (refuses an existing file)")
    args = parser.parse_args(argv)
    refuse_existing_out(parser, args.out)
    args.out = args.out or default_path("kernel_step")  # one new file for the partial and final writes
    if args.variants is not None:
        known = {name for arch in ARCH_BYTES for name in variant_names(arch, args.sweep)}
        unmatched = [pat for pat in args.variants if not fnmatch.filter(known, pat)]
        if unmatched:
            parser.error(f"--variants {' '.join(unmatched)} matches no variant; the variants are "
                         f"{', '.join(sorted(known))}")
    t0 = time.perf_counter()
    payload = {"benchmark": "kernel_step", "layers": NUM_LAYERS, "horizon": HORIZON,
               "adam_bytes_per_param": ADAM_BYTES, "correctness": {}, "results": [], "errors": []}

    def write():
        return save("kernel_step", payload, args.out)

    dev = jax.devices()[0]
    print(f"device: {dev.device_kind} ({dev.platform}), jax {jax.__version__}", flush=True)
    bw = copy_bandwidth()
    payload["copy_bandwidth_GBps"] = bw / 1e9
    print(f"elementwise pass bandwidth: {bw / 1e9:.0f} GB/s (read + write)", flush=True)
    write()

    rows = payload["results"]
    for size in args.sizes:
        params = make_params(int(size))
        grads = random_tree(params, 1)
        n = sum(x.size for x in jax.tree.leaves(params))
        adam_opt = optax.adam(1e-3)
        adam = Timed(optax_step(lambda th, opt=adam_opt: opt), params, adam_opt.init(params), {}, grads)
        adam.run(3)
        for arch in args.archs:
            lo = learned_optimizer(arch)
            theta = trained_like_theta(arch, lo)
            state = lo.optimizer(theta, num_steps=HORIZON).init(params)
            variants = timed_variants(arch, lo, theta, args.sweep)
            if args.variants is not None:
                variants = [v for v in variants if any(fnmatch.fnmatchcase(v[0], pat) for pat in args.variants)]
            for name, step, mode, nbytes in variants:
                if time.perf_counter() - t0 > args.budget_s:
                    payload["errors"].append(f"skipped {arch} {name} at {n} (time budget)")
                    continue
                try:
                    timed = Timed(step, params, state, theta, grads, mode)
                    timed.run(2)
                    ts, ta = [], []
                    for _ in range(args.repeats):
                        ta.append(adam.run(args.loops))
                        ts.append(timed.run(args.loops))
                    ms, adam_ms = 1e3 * statistics.median(ts), 1e3 * statistics.median(ta)
                    r = {"arch": arch, "variant": name, "n_params": n, "ms": ms, "adam_ms": adam_ms,
                         "x_adam": ms / adam_ms, "compile_s": timed.compile_s,
                         "finite": timed.finite(),
                         "adam_GBps": ADAM_BYTES * n / (adam_ms * 1e-3) / 1e9}
                    if nbytes:
                        r["bytes_per_param"] = nbytes
                        r["GBps"] = nbytes * n / (ms * 1e-3) / 1e9
                        r["frac_of_copy_bw"] = r["GBps"] * 1e9 / bw
                        r["bound_ms"] = nbytes * n / bw * 1e3
                    r["hlo"] = h = hlo_summary.summarise(timed.fn.as_text())
                    config = launch_configs(arch, args.sweep).get(name.removeprefix("fused_apply_"))
                    if config is not None:
                        error = variant_error if arch.startswith("mlp") else nominal_variant_error
                        r["update_rel_err"] = error(lo, theta, config)
                        print(f"  {name}: update error {r['update_rel_err']:.1e} against float32", flush=True)
                    rows.append(r)
                    print(f"  {n / 1e6:.0f}M {arch} {name}: {ms:.3f} ms ({ms / adam_ms:.2f}x adam "
                          f"{adam_ms:.3f} ms); program: {h['custom_calls']} kernel calls, "
                          f"{h['fusions']} fusions, {h['copies']} copies ({h['copy_bytes'] / 1e6:.1f} MB), "
                          f"{h['while_loops']} loops ({h['while_trips']} trips)", flush=True)
                    if args.profile:
                        r["profile"] = jax_trace.profile_calls(
                            timed.run, 5, tempfile.mkdtemp(prefix="lopt-kernel-trace-"), top=12)
                        jax_trace.print_summary(f"    {arch} {name}", r["profile"])
                    del timed
                except Exception as e:  # noqa: BLE001
                    payload["errors"].append(f"{arch} {name} {n}: {type(e).__name__}: {str(e)[:1500]}")
                    traceback.print_exc()
                write()
        del adam

    for arch in args.archs if args.check_size else []:
        if args.sizes and time.perf_counter() - t0 > args.budget_s:  # correctness-only runs check all
            payload["errors"].append(f"skipped correctness {arch} (time budget)")
            continue
        lo = learned_optimizer(arch)
        try:
            payload["correctness"][arch] = c = correctness(arch, lo, args.check_size)
            print(f"correctness {arch}: " + ", ".join(f"{k}={v:.2e}" for k, v in c.items()
                                                     if k != "n_params"), flush=True)
        except Exception as e:  # noqa: BLE001 - record and go on to timings
            payload["errors"].append(f"correctness {arch}: {type(e).__name__}: {str(e)[:2000]}")
            traceback.print_exc()
        write()

    path = write()
    print(f"\nsaved {path}; errors: {len(payload['errors'])}")
    for e in payload["errors"]:
        print("  ERROR", e[:300])
    print(f"\n{'params':>7} {'arch':>8} {'variant':>22} {'ms':>8} {'x adam':>7} {'B/param':>8} "
          f"{'GB/s':>6} {'of bw':>6} {'bound ms':>8}")
    for r in rows:
        print(f"{r['n_params'] / 1e6:>6.0f}M {r['arch']:>8} {r['variant']:>22} {r['ms']:>8.3f} "
              f"{r['x_adam']:>7.2f} {r.get('bytes_per_param', 0):>8} {r.get('GBps', 0):>6.0f} "
              f"{r.get('frac_of_copy_bw', 0):>6.2f} {r.get('bound_ms', 0):>8.3f}")
    print(f"adam: {ADAM_BYTES} B/param; copy bandwidth {bw / 1e9:.0f} GB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

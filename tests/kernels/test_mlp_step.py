"""The fused ``mlp`` step (Pallas interpret mode on CPU) equals the plain XLA path."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lopt import kernels
from lopt.kernels import mlp_step, tiles
from lopt.learned import MLPLOpt

LOPT = MLPLOpt()
THETA = LOPT.init(jax.random.key(0))
# Ranks 0-4, odd sizes, one tensor over several programs (block 256, reduce block 1024).
SHAPES = {"s": (), "v": (7,), "m": (33, 5), "t3": (3, 4, 5), "t4": (2, 3, 2, 5), "big": (1031, 3)}


def _inputs(seed, dtype=jnp.float32, shapes=SHAPES):
    rng = np.random.default_rng(seed)

    def draw(shape, scale=1.0):
        return jnp.asarray(rng.standard_normal(shape) * scale, jnp.float32)

    g = {k: draw(s).astype(dtype) for k, s in shapes.items()}
    p = {k: draw(s, 0.5).astype(dtype) for k, s in shapes.items()}
    m = {k: draw((*s, len(LOPT.decays)), 0.1) for k, s in shapes.items()}
    return g, p, m, draw(len(LOPT.time_scales))


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("apply", [False, True])
def test_fused_equals_xla_all_ranks(apply):
    g, p, m, ctx = _inputs(1)
    fused = jax.jit(lambda *a: mlp_step.mlp_update(LOPT, *a, interpret=True, apply=apply))
    ref = jax.jit(lambda *a: mlp_step.mlp_update_reference(LOPT, *a, apply=apply))
    (u, m1), (ur, mr) = fused(THETA["mlp"], ctx, g, m, p), ref(THETA["mlp"], ctx, g, m, p)
    for k, shape in SHAPES.items():
        assert u[k].shape == shape and m1[k].shape == m[k].shape
        assert _rel(u[k] - (p[k] if apply else 0), ur[k] - (p[k] if apply else 0)) < 1e-5, k
        np.testing.assert_allclose(m1[k], mr[k], rtol=1e-6, atol=1e-7)
        assert not np.allclose(m1[k], m[k])  # the momenta really moved


def test_bfloat16_params_and_grads():
    g, p, m, ctx = _inputs(2, jnp.bfloat16, {"w": (37, 9), "b": (9,)})
    fused = jax.jit(lambda *a: mlp_step.mlp_update(LOPT, *a, interpret=True, apply=True))
    u, m1 = fused(THETA["mlp"], ctx, g, m, p)
    ur, mr = mlp_step.mlp_update_reference(LOPT, THETA["mlp"], ctx, g, m, p, apply=True)
    for k in g:
        assert u[k].dtype == jnp.bfloat16 and m1[k].dtype == jnp.float32
        # Same bfloat16 rounding of p + u: at most one ulp apart where float32 sums differ.
        diff = np.abs(np.asarray(u[k], np.float32) - np.asarray(ur[k], np.float32))
        assert np.mean(diff == 0) > 0.95 and diff.max() <= 2 ** -7 * np.abs(
            np.asarray(ur[k], np.float32)).max()
        np.testing.assert_allclose(m1[k], mr[k], rtol=1e-6, atol=1e-7)


def test_vmap_over_tasks_and_theta():
    shapes = {"w": (19, 6), "b": (6,)}
    batch = [_inputs(10 + i, shapes=shapes) for i in range(3)]
    g, p, m, ctx = jax.tree.map(lambda *x: jnp.stack(x), *batch)
    thetas = jax.vmap(LOPT.init)(jax.random.split(jax.random.key(3), 3))["mlp"]
    fused = jax.jit(jax.vmap(lambda *a: mlp_step.mlp_update(LOPT, *a, interpret=True)))
    ref = jax.jit(jax.vmap(lambda *a: mlp_step.mlp_update_reference(LOPT, *a)))
    (u, m1), (ur, mr) = fused(thetas, ctx, g, m, p), ref(thetas, ctx, g, m, p)
    for k, shape in shapes.items():
        assert u[k].shape == (3, *shape)
        assert _rel(u[k], ur[k]) < 1e-5
        np.testing.assert_allclose(m1[k], mr[k], rtol=1e-6, atol=1e-7)


def test_grad_through_fused_step_equals_xla_grad():
    g, p, m, ctx = _inputs(4, shapes={"w": (21, 4), "b": (4,)})

    def loss(net, update_fn):
        u, mom = update_fn(LOPT, net, ctx, g, m, p)
        return sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves((u, mom)))

    fused = jax.jit(jax.grad(
        lambda net: loss(net, lambda *a: mlp_step.mlp_update(*a, interpret=True))))
    ref = jax.jit(jax.grad(lambda net: loss(net, mlp_step.mlp_update_reference)))
    gf, gr = fused(THETA["mlp"]), ref(THETA["mlp"])
    for k in gr:
        assert _rel(gf[k], gr[k]) < 1e-5, k
    assert float(jnp.abs(gr["w0"]).max()) > 0


def test_optimizer_uses_kernel_under_mode_and_matches_xla_over_steps():
    params = {"w": jnp.linspace(-1, 1, 45).reshape(9, 5), "b": jnp.zeros(5)}
    opt = LOPT.optimizer(THETA)

    def run(mode):
        with kernels.mode_scope(mode):
            step = jax.jit(lambda p, s: opt.update(jax.tree.map(lambda x: x ** 3 + 0.1, p), s, p))
            p, s = params, opt.init(params)
            jaxpr = str(jax.make_jaxpr(step)(p, s))
            for _ in range(3):
                u, s = step(p, s)
                p = optax.apply_updates(p, u)
        return p, s, "pallas_call" in jaxpr

    (pf, sf, used_f), (px, sx, used_x) = run("interpret"), run("xla")
    assert used_f and not used_x
    for k in params:
        np.testing.assert_allclose(pf[k], px[k], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(sf.momentum[k], sx.momentum[k], rtol=1e-5, atol=1e-8)
    assert not np.allclose(pf["w"], params["w"])


def test_modes_and_bad_input(monkeypatch):
    assert kernels.resolve(False) is None
    with kernels.mode_scope("auto"):  # CPU here: auto keeps the XLA path
        assert kernels.resolve(True) is (None if jax.default_backend() != "gpu" else False)
    with kernels.mode_scope("pallas"):
        assert kernels.resolve(True) is (jax.default_backend() != "gpu")
    with pytest.raises(ValueError, match="not one of"):
        kernels.set_mode("fast")
    monkeypatch.setenv("LOPT_KERNELS", "triton")
    with pytest.raises(ValueError, match="LOPT_KERNELS='triton'"):
        kernels.get_mode()
    assert not mlp_step.supported(MLPLOpt(hidden_size=24))
    with pytest.raises(ValueError, match="power-of-two hidden_size"):
        mlp_step.mlp_update(MLPLOpt(hidden_size=24), None, None, {}, {}, {}, interpret=True)
    with pytest.raises(ValueError, match="block=100"):
        tiles.KernelConfig(block=100)
    with pytest.raises(ValueError, match="precision='fp8'"):
        tiles.KernelConfig(precision="fp8")


def test_bytes_per_param_counts_both_passes():
    # reduction: g, p, 6 momenta read (32 B); main: same read + 6 momenta and p written (28 B)
    assert mlp_step.bytes_per_param() == 32 + 32 + 28
    assert mlp_step.bytes_per_param(apply=False) == 92 + 12
    assert mlp_step.passes() == 2 and mlp_step.tile_width(6) == 8 and mlp_step.tile_width(14) == 16


def test_bfloat16_momenta_follow_the_xla_path_entry_for_entry():
    """bfloat16 momenta rounded stochastically: the kernel draws the XLA path's bits (index, step,
    tensor, momentum column), so the stored momenta agree except where the float32 value being
    rounded differs in its last bit, and the updates agree to float32 tolerance."""
    half = MLPLOpt(state_dtype="bfloat16")
    g, p, m, ctx = _inputs(5)
    m = {k: v.astype(jnp.bfloat16) for k, v in m.items()}
    fused = jax.jit(lambda *a: mlp_step.mlp_update(half, *a, interpret=True, step=jnp.int32(7)))
    ref = jax.jit(lambda *a: mlp_step.mlp_update_reference(half, *a, step=jnp.int32(7)))
    (u, m1), (ur, mr) = fused(THETA["mlp"], ctx, g, m, p), ref(THETA["mlp"], ctx, g, m, p)
    for k in SHAPES:
        assert m1[k].dtype == mr[k].dtype == jnp.bfloat16
        a, b = np.asarray(m1[k], np.float32), np.asarray(mr[k], np.float32)
        assert np.mean(a == b) > 0.98, k
        np.testing.assert_allclose(a, b, rtol=2**-7, atol=1e-30)
        assert _rel(u[k], ur[k]) < 1e-5, k
    # another step's bits round differently (same inputs): the rounding is stochastic
    other = jax.jit(lambda *a: mlp_step.mlp_update_reference(half, *a, step=jnp.int32(8)))(THETA["mlp"], ctx, g, m, p)
    assert np.mean(np.asarray(other[1]["big"], np.float32) != np.asarray(mr["big"], np.float32)) > 0.05


@pytest.mark.parametrize("state_dtype, apply", [("float32", True), ("bfloat16", False)])
def test_persistent_main_pass_equals_the_per_block_kernel_and_xla(state_dtype, apply):
    """KernelConfig(programs=P): P programs each walk blocks pid, pid + P, ..., loading the next
    block during the current one. With 3 programs of 32 rows, "big" (3,093 entries, 97 blocks) takes
    33 iterations, the last past the end (fully masked), and the scalar one iteration of 3 with two
    empty blocks: every entry equals the per-block kernel's to float32 rounding (XLA compiles the
    products inside the loop on its own; a stored bfloat16 momentum may then round the other way)."""
    lo = MLPLOpt(state_dtype=state_dtype)
    g, p, m, ctx = _inputs(8)
    m = {k: v.astype(lo.state_dtype) for k, v in m.items()}
    persistent = tiles.KernelConfig(block=32, reduce_block=64, programs=3)

    def run(cfg):
        return jax.jit(lambda *a: mlp_step.mlp_update(lo, *a, interpret=True, apply=apply, cfg=cfg,
                                                      step=jnp.int32(3)))(THETA["mlp"], ctx, g, m, p)

    (u, m1), (ub, mb) = run(persistent), run(dataclasses.replace(persistent, programs=None))
    ur, _ = mlp_step.mlp_update_reference(lo, THETA["mlp"], ctx, g, m, p, apply=apply, step=jnp.int32(3))
    for k in SHAPES:
        np.testing.assert_allclose(np.asarray(u[k]), np.asarray(ub[k]), rtol=1e-5, atol=1e-9)
        a, b = np.asarray(m1[k], np.float32), np.asarray(mb[k], np.float32)
        if state_dtype == "bfloat16":
            assert np.mean(a == b) > 0.98, k
        np.testing.assert_allclose(a, b, rtol=2**-7 if state_dtype == "bfloat16" else 1e-6, atol=1e-7)
        np.testing.assert_allclose(np.asarray(u[k]), np.asarray(ur[k]), rtol=1e-5, atol=1e-7)
        assert not np.allclose(np.asarray(m1[k], np.float32), np.asarray(m[k], np.float32)), k


def test_persistent_main_pass_under_vmap():
    """vmap adds a grid axis in front of the persistent programs' axis: each task's programs still
    walk that task's blocks (a tensor over 10 blocks of 32 rows, 3 programs)."""
    _check_vmap_over_three_tasks(tiles.KernelConfig(block=32, reduce_block=64, programs=3), seed=20)


def _check_vmap_over_three_tasks(cfg, seed, shapes=None):
    """The fused step at launch ``cfg`` under vmap over three tasks' inputs and thetas equals the XLA
    path's; returns the tasks' inputs ``(g, p, m, ctx)``."""
    shapes = shapes or {"w": (19, 6), "b": (6,), "big": (300, 3)}
    g, p, m, ctx = jax.tree.map(lambda *x: jnp.stack(x), *[_inputs(seed + i, shapes=shapes) for i in range(3)])
    thetas = jax.vmap(LOPT.init)(jax.random.split(jax.random.key(seed), 3))["mlp"]
    fused = jax.jit(jax.vmap(lambda *a: mlp_step.mlp_update(LOPT, *a, interpret=True, cfg=cfg)))
    (u, m1), (ur, mr) = fused(thetas, ctx, g, m, p), jax.vmap(
        lambda *a: mlp_step.mlp_update_reference(LOPT, *a))(thetas, ctx, g, m, p)
    for k in shapes:
        assert _rel(u[k], ur[k]) < 1e-5, k
        np.testing.assert_allclose(m1[k], mr[k], rtol=1e-6, atol=1e-7)
    return g, p, m, ctx


def test_bfloat16_momenta_need_the_step():
    half = MLPLOpt(state_dtype="bfloat16")
    g, p, m, ctx = _inputs(6, shapes={"w": (4, 3)})
    with pytest.raises(ValueError, match="pass step="):
        mlp_step.mlp_update(half, THETA["mlp"], ctx, g, m, p, interpret=True)


def test_bfloat16_momenta_optimizer_uses_the_kernel_and_matches_xla():
    half = MLPLOpt(state_dtype="bfloat16")
    opt = half.optimizer(THETA)
    params = {"w": jnp.linspace(-1.0, 1.0, 60).reshape(12, 5), "b": jnp.zeros(5)}
    results = {}
    for mode in ("xla", "interpret"):
        with kernels.mode_scope(mode):
            step = jax.jit(opt.update)
            p, s = params, opt.init(params)
            for _ in range(3):
                u, s = step(jax.tree.map(lambda x: x - 0.3, p), s, p)
                p = optax.apply_updates(p, u)
        results[mode] = (p, s)
    assert results["xla"][1].momentum["w"].dtype == jnp.bfloat16
    for k in params:
        np.testing.assert_allclose(results["interpret"][0][k], results["xla"][0][k], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("state_dtype", ["float32", "bfloat16"])
def test_kernel_lowers_to_triton_for_cuda(state_dtype):
    """Cross-platform lowering on the CPU runs the Pallas -> Triton lowering a GPU run would."""
    from jax import export

    config = MLPLOpt(state_dtype=state_dtype)
    params = {"w": jnp.ones((64, 32)), "b": jnp.zeros(32)}
    state = config.optimizer(THETA).init(params)
    ctx = jnp.zeros(len(config.time_scales))
    step = jax.jit(lambda g, m, p: mlp_step.mlp_update(config, THETA["mlp"], ctx, g, m, p, interpret=False,
                                                       apply=True, step=jnp.int32(1)))
    triton = export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
    exported = export.export(step, platforms=["cuda"], disabled_checks=[triton])(params, state.momentum, params)
    assert exported.mlir_module().count("xla.gpu.triton") == 4  # reduction and main pass per tensor


def test_bfloat16_products_round_the_network_not_the_momenta():
    """KernelConfig(precision="bf16") rounds the hidden layers' product operands to bfloat16 (float32
    accumulation) in interpret mode too, as the GPU's tensor cores do: the update moves off the
    float32 reference by about bfloat16's 2**-8 relative precision, far beyond float32 rounding, and
    the momenta, which no product touches, stay equal."""
    g, p, m, ctx = _inputs(11)
    cfg = tiles.KernelConfig(block=64, reduce_block=128, precision="bf16")
    u, m1 = jax.jit(lambda *a: mlp_step.mlp_update(LOPT, *a, interpret=True, cfg=cfg))(THETA["mlp"], ctx, g, m, p)
    ur, mr = mlp_step.mlp_update_reference(LOPT, THETA["mlp"], ctx, g, m, p)
    flat = lambda tree: np.concatenate([np.ravel(tree[k]) for k in SHAPES])
    err = _rel(flat(u), flat(ur))
    assert 1e-4 < err < 2e-2, err
    for k in SHAPES:
        np.testing.assert_allclose(m1[k], mr[k], rtol=1e-6, atol=1e-7)


def test_bfloat16_products_equal_the_network_with_rounded_operands():
    """With bf16 products the kernel computes the network whose hidden activations and the weights
    after the first layer are rounded to bfloat16 (the first product, K = 8, and all sums stay
    float32), the output layer included (a [block, 32] @ [32, 8] product there): it agrees with that
    rounded network to float32 rounding, while the float32 network is bfloat16's rounding away."""
    from lopt.learned import features as F
    from lopt.learned import nn

    g, p, m, ctx = _inputs(12, shapes={"big": (1031, 3)})
    cfg = tiles.KernelConfig(block=64, reduce_block=128, precision="bf16")
    u, _ = jax.jit(lambda *a: mlp_step.mlp_update(LOPT, *a, interpret=True, cfg=cfg))(THETA["mlp"], ctx, g, m, p)
    bf16 = lambda a: a.astype(jnp.bfloat16).astype(jnp.float32)
    net = {k: (bf16(v) if k not in ("w0", "b0") and k.startswith("w") else v) for k, v in THETA["mlp"].items()}
    momentum = F.momentum_update(m["big"], g["big"], jnp.asarray(LOPT.decays, jnp.float32))
    x = F.second_moment_normalize(jnp.concatenate([g["big"][..., None], p["big"][..., None], momentum], -1))
    out = nn.mlp_apply(net, x.reshape(-1, x.shape[-1]), context=ctx, activation=lambda z: bf16(jax.nn.relu(z)))
    rounded = -(out[:, 0] * jnp.exp(out[:, 1] * LOPT.exp_mult) * LOPT.step_mult).reshape(g["big"].shape)
    float32 = mlp_step.mlp_update_reference(LOPT, THETA["mlp"], ctx, g, m, p)[0]["big"]
    # Entry by entry to float32 rounding, but for the rare pre-activation within float32 rounding of a
    # bfloat16 tie, which the two float32 first products (folded and not) may round apart: 0 of 3,093
    # entries on stop 60's CPU, 2 on stop 61's (AVX-512, another summation order; 4.4e-5 overall).
    close = np.abs(np.asarray(u["big"] - rounded)) <= 1e-6 * float(jnp.max(jnp.abs(rounded)))
    assert close.mean() > 0.995, close.mean()
    assert _rel(u["big"], rounded) < 3e-4
    assert _rel(u["big"], float32) > 1e-3  # bfloat16's rounding: 4e-3 measured


def test_bfloat16_products_narrower_than_16_run_at_tf32():
    """Hopper's bf16 tensor-core products take K in steps of 16; the 8-wide first product of `mlp`
    came out 1.77x too large on an H100 (stop 59). ``tiles.dot`` runs contractions narrower than
    ``BF16_MIN_K`` at TF32: in interpret mode that is the float32 product, bit for bit, while a
    16-wide one is rounded to bfloat16."""
    a = jax.random.normal(jax.random.key(0), (64, 32))
    b = jax.random.normal(jax.random.key(1), (32, 32))
    for k in (1, 8, tiles.BF16_MIN_K - 1):
        np.testing.assert_array_equal(tiles.dot(a[:, :k], b[:k], "bf16"), tiles.dot(a[:, :k], b[:k], None))
    wide = tiles.dot(a[:, :16], b[:16], "bf16")
    rounded = a[:, :16].astype(jnp.bfloat16).astype(jnp.float32) @ b[:16].astype(jnp.bfloat16).astype(jnp.float32)
    np.testing.assert_allclose(wide, rounded, rtol=1e-5, atol=1e-5)
    assert _rel(wide, tiles.dot(a[:, :16], b[:16], None)) > 1e-3


def test_kernel_precision_is_an_execution_option_of_the_optimizer():
    """MLPLOpt(kernel_precision="bf16") reaches the fused kernel through the optimizer: its step
    moves off the XLA path's by bfloat16-sized amounts, while the default stays within float32
    rounding of it; the option is not part of the config (the same theta serves both) and an
    unknown precision is refused by name."""
    params = {"w": jnp.linspace(-1, 1, 45).reshape(9, 5), "b": jnp.zeros(5)}
    grads = jax.tree.map(lambda x: x ** 3 + 0.1, params)

    def update(lo, mode):
        opt = lo.optimizer(THETA)
        with kernels.mode_scope(mode):
            return jax.jit(opt.update)(grads, opt.init(params), params)[0]

    xla = update(LOPT, "xla")
    default = update(LOPT, "interpret")
    bf16 = update(LOPT.with_execution_options(kernel_precision="bf16"), "interpret")
    for k in params:
        assert _rel(default[k], xla[k]) < 1e-5, k
        assert 1e-4 < _rel(bf16[k], xla[k]) < 3e-2, (k, _rel(bf16[k], xla[k]))
    assert MLPLOpt(kernel_precision="bf16").config() == LOPT.config()
    assert "kernel_precision" not in LOPT.config()
    with pytest.raises(ValueError, match="kernel_precision='fp8' must be one of"):
        MLPLOpt(kernel_precision="fp8")


def test_optimizer_launches_its_step_in_two_warp_programs(monkeypatch):
    """MLPLOpt launches its fused step with mlp_step.launch_config at its kernel_precision: 128-row,
    two-warp programs (Triton's mma.sync products; bf16: 4.64 against 5.07 ms at 256 x 4 on an H100,
    stop 61; tf32: 5.81 against 6.05 ms, stop 62), not KernelConfig's 256 x 4 default; the update
    is the kernel's at that launch."""
    from lopt import kernels
    from lopt.learned import features as F

    seen = []
    fused = mlp_step.mlp_update

    def spy(*args, cfg=None, **kwargs):
        seen.append(cfg)
        return fused(*args, cfg=cfg, **kwargs)

    monkeypatch.setattr(mlp_step, "mlp_update", spy)
    g, p, m, _ = _inputs(13)
    assert (tiles.KernelConfig().block, tiles.KernelConfig().num_warps) == (256, 4)
    for precision, block, warps in (("bf16", 128, 2), ("tf32", 128, 2)):
        config = LOPT.with_execution_options(kernel_precision=precision)
        opt = config.optimizer(THETA)
        state = opt.init(p)._replace(momentum=m)
        with kernels.mode_scope("pallas"):
            u, _ = jax.jit(lambda g, s, p, opt=opt: opt.update(g, s, p, loss=1.0))(g, state, p)
        cfg = seen[-1]
        assert (cfg.block, cfg.num_warps, cfg.precision) == (block, warps, precision)
        context = F.tanh_time_embedding(state.count, config.time_scales)
        direct = fused(config, THETA["mlp"], context, g, m, p, interpret=True,
                       cfg=mlp_step.launch_config(precision), step=1)[0]
        for k in SHAPES:
            np.testing.assert_allclose(u[k], direct[k], rtol=1e-6, atol=1e-9)



@pytest.mark.parametrize("state_dtype, apply", [("float32", True), ("bfloat16", False)])
def test_overlapped_reduction_equals_separate_launches_and_xla(state_dtype, apply):
    """KernelConfig(reduction="overlapped"): each main pass launch also runs the next tensor's
    reduction in interleaved programs. With 32-row main blocks and 64-row reduction blocks the six
    tensors pair every ratio of block counts: "t4" (60 entries, 2 main blocks) runs "big"'s
    reduction (3,093 entries, 49 blocks), "m" (165, 6) runs "t3"'s (60, 1). Each result equals the
    separate launches' (the same arithmetic per entry) and the XLA path's."""
    lo = MLPLOpt(state_dtype=state_dtype)
    g, p, m, ctx = _inputs(9)
    m = {k: v.astype(lo.state_dtype) for k, v in m.items()}
    overlapped = tiles.KernelConfig(block=32, reduce_block=64, reduction="overlapped")

    def run(cfg):
        return jax.jit(lambda *a: mlp_step.mlp_update(lo, *a, interpret=True, apply=apply, cfg=cfg,
                                                      step=jnp.int32(5)))(THETA["mlp"], ctx, g, m, p)

    (u, m1), (us, ms) = run(overlapped), run(dataclasses.replace(overlapped, reduction="separate"))
    ur, mr = mlp_step.mlp_update_reference(lo, THETA["mlp"], ctx, g, m, p, apply=apply, step=jnp.int32(5))
    for k in SHAPES:
        np.testing.assert_allclose(np.asarray(u[k]), np.asarray(us[k]), rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(np.asarray(m1[k], np.float32), np.asarray(ms[k], np.float32))
        np.testing.assert_allclose(np.asarray(u[k]), np.asarray(ur[k]), rtol=1e-5, atol=1e-7)
        a, b = np.asarray(m1[k], np.float32), np.asarray(mr[k], np.float32)
        np.testing.assert_allclose(a, b, rtol=2**-7 if state_dtype == "bfloat16" else 1e-6, atol=1e-7)
        assert not np.allclose(a, np.asarray(m[k], np.float32)), k


def test_overlapped_reduction_under_vmap_and_grad():
    """vmap over tasks and reverse mode (the XLA path's gradient of the whole pytree) both work with
    the reduction in the main pass's launch."""
    cfg = tiles.KernelConfig(block=32, reduce_block=64, reduction="overlapped")
    g, p, m, ctx = _check_vmap_over_three_tasks(cfg, seed=30)

    def loss(net, update):
        u, _ = update(LOPT, net, ctx[0], jax.tree.map(lambda x: x[0], g), jax.tree.map(lambda x: x[0], m),
                      jax.tree.map(lambda x: x[0], p))
        return sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(u))

    fused_grad = jax.grad(loss)(THETA["mlp"], lambda *a: mlp_step.mlp_update(*a, interpret=True, cfg=cfg))
    ref_grad = jax.grad(loss)(THETA["mlp"], mlp_step.mlp_update_reference)
    for name in ref_grad:
        np.testing.assert_allclose(fused_grad[name], ref_grad[name], rtol=1e-4, atol=1e-9)
        assert np.any(np.asarray(ref_grad[name]) != 0), name


def test_overlapped_reduction_lowers_to_one_launch_per_tensor_plus_one():
    """Three tensors: the first tensor's reduction alone, then three main pass launches, the first two
    of which run the next tensor's reduction (``lopt_mlp_step_and_reduce``)."""
    from jax import export

    params = {"a": jnp.ones((64, 32)), "b": jnp.zeros(32), "c": jnp.ones((8, 8))}
    state = LOPT.optimizer(THETA).init(params)
    ctx = jnp.zeros(len(LOPT.time_scales))
    cfg = tiles.KernelConfig(128, 256, 2, reduction="overlapped")
    step = jax.jit(lambda g, m, p: mlp_step.mlp_update(LOPT, THETA["mlp"], ctx, g, m, p, interpret=False,
                                                       apply=True, cfg=cfg))
    triton = export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
    text = export.export(step, platforms=["cuda"], disabled_checks=[triton])(
        params, state.momentum, params).mlir_module()
    calls = [line for line in text.splitlines() if "xla.gpu.triton" in line]
    assert len(calls) == 4
    assert sum("lopt_mlp_step_and_reduce" in c for c in calls) == 2
    assert sum("lopt_mlp_reduce" in c for c in calls) == 1


def test_overlapped_reduction_refuses_a_persistent_main_pass():
    with pytest.raises(ValueError, match="reduction='overlapped'.*programs=8"):
        tiles.KernelConfig(programs=8, reduction="overlapped")
    with pytest.raises(ValueError, match="reduction='both'"):
        tiles.KernelConfig(reduction="both")


@pytest.mark.parametrize("first, second", [(5, 2), (2, 5), (7, 7), (1, 9), (100, 3), (1, 1)])
def test_interleaved_programs_take_each_block_of_both_kinds_once(first, second):
    is_second, index = tiles.interleaved(np.arange(first + second), first, second)
    assert sorted(index[~is_second].tolist()) == list(range(first))
    assert sorted(index[is_second].tolist()) == list(range(second))
    # spread evenly: the minor kind's programs are never more than one period apart until it runs out
    minor = is_second if second <= first else ~is_second
    gaps = np.diff(np.flatnonzero(minor))
    assert gaps.size == 0 or gaps.max() == max(first, second) // min(first, second) + 1
    with pytest.raises(ValueError, match="positive"):
        tiles.interleaved(np.arange(3), 3, 0)


@pytest.mark.parametrize("reduction", ["separate", "overlapped"])
def test_bfloat16_momenta_under_vmap_follow_the_xla_path(reduction):
    """Meta-training's case: bfloat16 momenta (the step count read per row by each task's programs,
    tiles.per_row) under vmap over tasks and thetas: momenta equal to the XLA path's entry for entry."""
    lo = MLPLOpt(state_dtype="bfloat16")
    shapes = {"w": (19, 6), "b": (6,)}
    g, p, m, ctx = jax.tree.map(lambda *x: jnp.stack(x), *[_inputs(40 + i, shapes=shapes) for i in range(2)])
    m = jax.tree.map(lambda x: x.astype(jnp.bfloat16), m)
    thetas = jax.vmap(lo.init)(jax.random.split(jax.random.key(1), 2))["mlp"]
    cfg = tiles.KernelConfig(block=32, reduce_block=64, reduction=reduction)
    fused = jax.jit(jax.vmap(lambda *a: mlp_step.mlp_update(lo, *a, interpret=True, cfg=cfg, step=jnp.int32(3))))
    ref = jax.vmap(lambda *a: mlp_step.mlp_update_reference(lo, *a, step=jnp.int32(3)))
    (u, m1), (ur, mr) = fused(thetas, ctx, g, m, p), ref(thetas, ctx, g, m, p)
    for k in shapes:
        assert _rel(u[k], ur[k]) < 1e-5, k
        np.testing.assert_array_equal(np.asarray(m1[k], np.float32), np.asarray(mr[k], np.float32))
        assert not np.array_equal(np.asarray(m1[k], np.float32), np.asarray(m[k], np.float32)), k

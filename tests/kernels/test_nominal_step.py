"""The fused ``nominal`` step (Pallas interpret mode on CPU) equals NominalLOpt's XLA update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.kernels import nominal_step, tiles
from lopt.learned import NominalLOpt

LOPT = NominalLOpt()
# Ranks 0-4 (rank < 2 take the XLA path inside the step), odd sizes, both factored orders.
SHAPES = {"s": (), "v": (7,), "m": (33, 5), "mt": (5, 33), "t4": (2, 3, 2, 5), "big": (300, 3)}


def _theta(seed=0):
    """A theta whose network, schedule and muP exponent all matter (init has a zero last layer)."""
    theta = LOPT.init(jax.random.key(seed))
    key = jax.random.key(seed + 1)
    theta["network"]["w2"] = 0.5 * jax.random.normal(key, theta["network"]["w2"].shape)
    theta["network"]["b2"] = jnp.asarray([0.1, -0.2])
    theta["schedule"] = jnp.linspace(-1.0, 1.0, LOPT.schedule_knots)
    theta["mup_exponent"] = jnp.asarray(0.3)
    return theta


def _draw(rng, shapes, dtype=jnp.float32, scale=1.0):
    return {k: jnp.asarray(rng.standard_normal(s) * scale, jnp.float32).astype(dtype)
            for k, s in shapes.items()}


def _rel_max(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _trajectory(update_fn, theta, params, grads_seq, horizon, state):
    for grads in grads_seq:
        updates, state = update_fn(theta, grads, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    return params, state


@pytest.mark.parametrize("horizon", [40, None])
def test_fused_trajectory_equals_xla(horizon):
    rng = np.random.default_rng(0)
    theta, params = _theta(), _draw(rng, SHAPES)
    grads_seq = [_draw(rng, SHAPES) for _ in range(2)]
    opt = LOPT.optimizer(theta, num_steps=horizon)
    fused = jax.jit(lambda th, g, s, p: nominal_step.nominal_update(
        LOPT, th, horizon, g, s, p, interpret=True))
    xla = jax.jit(lambda th, g, s, p: LOPT.optimizer(th, num_steps=horizon).update(g, s, p))
    pf, sf = _trajectory(fused, theta, params, grads_seq, horizon, opt.init(params))
    px, sx = _trajectory(xla, theta, params, grads_seq, horizon, opt.init(params))
    for k in SHAPES:
        step_f, step_x = pf[k] - params[k], px[k] - params[k]
        assert float(jnp.abs(step_x).max()) > 1e-4, k  # the steps are not trivially zero
        assert _rel_max(step_f, step_x) < 1e-4, k
    assert int(sf.count) == int(sx.count) == 2
    for a, b in zip(jax.tree.leaves(sf), jax.tree.leaves(sx)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_bfloat16_and_apply():
    rng = np.random.default_rng(1)
    shapes = {"w": (37, 9), "b": (9,)}
    theta, params = _theta(2), _draw(rng, shapes, jnp.bfloat16)
    grads = _draw(rng, shapes, jnp.bfloat16)
    state = LOPT.optimizer(theta, num_steps=20).init(params)
    new_p, new_s = jax.jit(lambda *a: nominal_step.nominal_update(
        LOPT, *a, interpret=True, apply=True), static_argnums=())(theta, 20, grads, state, params)
    u, ref_s = LOPT.optimizer(theta, num_steps=20).update(grads, state, params)
    ref_p = jax.tree.map(lambda p, x: p + x, params, u)
    for k in shapes:
        assert new_p[k].dtype == jnp.bfloat16
        diff = np.abs(np.asarray(new_p[k], np.float32) - np.asarray(ref_p[k], np.float32))
        assert np.mean(diff == 0) > 0.95 and diff.max() <= 2 ** -7 * np.abs(
            np.asarray(ref_p[k], np.float32)).max()
    for a, b in zip(jax.tree.leaves(new_s), jax.tree.leaves(ref_s)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _steps(theta, grads, state, params, fused):
    if fused:
        return nominal_step.nominal_update(LOPT, theta, 30, grads, state, params, interpret=True)
    return LOPT.optimizer(theta, num_steps=30).update(grads, state, params)


def test_vmap_over_tasks_and_theta():
    rng = np.random.default_rng(3)
    shapes = {"w": (11, 6), "b": (6,)}
    params = _draw(rng, shapes)
    thetas = jax.vmap(_theta)(jnp.arange(2))
    grads = jax.tree.map(lambda *x: jnp.stack(x), *[_draw(rng, shapes) for _ in range(2)])
    state = LOPT.optimizer(_theta(), num_steps=30).init(params)
    (uf, sf), (ux, sx) = (
        jax.jit(jax.vmap(lambda th, g, f=f: _steps(th, g, state, params, f)))(thetas, grads)
        for f in (True, False))
    for k, shape in shapes.items():
        assert uf[k].shape == (2, *shape) and _rel_max(uf[k], ux[k]) < 1e-4
    for a, b in zip(jax.tree.leaves(sf), jax.tree.leaves(sx)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _assert_grad_matches_xla(lopt, theta, grads, state, params, readout):
    """d/dtheta of ``readout(updates, new_state)`` through the kernel equals it through XLA."""

    def loss(theta, fused):
        if fused:
            u, s = nominal_step.nominal_update(lopt, theta, 30, grads, state, params,
                                               interpret=True)
        else:
            u, s = lopt.optimizer(theta, num_steps=30).update(grads, state, params)
        return readout(u, s)

    gf = jax.jit(jax.grad(lambda th: loss(th, True)))(theta)
    gx = jax.jit(jax.grad(lambda th: loss(th, False)))(theta)
    for a, b in zip(jax.tree.leaves(gf), jax.tree.leaves(gx)):
        assert _rel_max(a, b) < 1e-5
    return gx


def test_grad_wrt_theta_equals_xla_grad():
    lopt = NominalLOpt(hidden_size=4)  # a smaller unrolled network: quicker to compile
    rng = np.random.default_rng(4)
    shapes = {"w": (9, 6)}
    params, grads, weights = _draw(rng, shapes), _draw(rng, shapes), _draw(rng, shapes)
    theta = lopt.init(jax.random.key(0))
    theta["network"]["w2"] = 0.5 * jax.random.normal(jax.random.key(1), (4, 2))
    state = lopt.optimizer(theta, num_steps=30).init(params)
    gx = _assert_grad_matches_xla(
        lopt, theta, grads, state, params,
        lambda u, s: jnp.sum(u["w"] * weights["w"]) + jnp.sum(jnp.sin(s.momentum["w"])))
    assert float(jnp.abs(gx["network"]["w2"]).max()) > 0


def test_unsupported_config_and_byte_count():
    assert not nominal_step.supported(NominalLOpt(hidden_size=64))
    with pytest.raises(ValueError, match="hidden_size must be <= 32"):
        nominal_step.nominal_update(NominalLOpt(hidden_size=64), None, None, {}, None, {},
                                    interpret=True)
    # main pass: g, p, 3 momenta, v read (24 B); written 20 B
    assert nominal_step.bytes_per_param() == 8 + 24 + 20  # statistics: g and p read once
    assert nominal_step.bytes_per_param(statistics="xla") == 12 + 24 + 20  # g twice, p once
    assert nominal_step.bytes_per_param(apply=False) == 52 + 12 and nominal_step.passes() == 2


def test_optimizer_hook_uses_kernel_and_matches_xla():
    from lopt import kernels

    params = {"w": jnp.linspace(-1.0, 1.0, 45).reshape(9, 5), "b": jnp.zeros(5)}
    theta = _theta()

    def run(mode):
        opt = LOPT.optimizer(theta, num_steps=20)
        with kernels.mode_scope(mode):
            step = jax.jit(lambda p, s: opt.update(jax.tree.map(lambda x: x ** 3 + 0.1, p), s, p))
            used = "pallas_call" in str(jax.make_jaxpr(step)(params, opt.init(params)))
            p, s = params, opt.init(params)
            for _ in range(2):
                u, s = step(p, s)
                p = jax.tree.map(lambda a, b: a + b, p, u)
        return p, used

    (pf, used_f), (px, used_x) = run("interpret"), run("xla")
    assert used_f and not used_x
    for k, p0 in params.items():  # float32 rounding, amplified a little by two large steps
        assert _rel_max(pf[k] - p0, px[k] - p0) < 1e-4, k
    assert not np.allclose(pf["w"], params["w"])


DISTANCE = NominalLOpt(step_size="distance", relative_initial_distance=1e-5)
ANCHORED = NominalLOpt(step_size="distance", relative_initial_distance=1e-5, anchored_direction=True)


@pytest.mark.parametrize("config, anchor", [(DISTANCE, "network"), (ANCHORED, "table"), (ANCHORED, "network")],
                         ids=["distance", "anchored_table", "anchored_network"])
def test_distance_step_trajectory_equals_xla(config, anchor):
    """The pretrained optimizer's configs: the kernel also advances the distance estimate (and,
    anchored, subtracts the direction at zero gradient inputs, looked up from its linear pieces or
    from a second pass of the network)."""
    _check_distance_trajectory(config, {"s": (), "v": (7,), "m": (33, 5), "t4": (2, 3, 2, 5),
                                        "big": (300, 3)}, tiles.KernelConfig(anchor=anchor))


def _check_distance_trajectory(config, shapes, cfg=None):
    """25 steps on a quadratic through the kernel (launch ``cfg``) and through XLA agree."""
    rng = np.random.default_rng(5)
    params = _draw(rng, shapes)
    theta = config.init(jax.random.key(0))
    theta["network"]["w2"] = 0.05 * jax.random.normal(jax.random.key(1), theta["network"]["w2"].shape)
    theta["network"]["b2"] = jnp.asarray([0.02, -0.01])  # a direction at zero gradient inputs
    opt = config.optimizer(theta, num_steps=40)
    fused = jax.jit(lambda g, s, p: nominal_step.nominal_update(config, theta, 40, g, s, p,
                                                                interpret=True, cfg=cfg))
    xla = jax.jit(opt.update)
    states, points = {}, {}
    for name, step in (("fused", fused), ("xla", xla)):
        p, s = params, opt.init(params)
        for _ in range(25):  # a quadratic: the estimate grows geometrically
            u, s = step(jax.tree.map(lambda x: x - 3.0, p), s, p)
            p = jax.tree.map(jnp.add, p, u)
        states[name], points[name] = s, p
    start = float(opt.init(params).distance.distance)
    assert float(states["xla"].distance.distance) > 10 * start
    np.testing.assert_allclose(states["fused"].distance.distance, states["xla"].distance.distance,
                               rtol=1e-4)
    np.testing.assert_allclose(states["fused"].distance.numerator, states["xla"].distance.numerator,
                               rtol=1e-4)
    for k in shapes:
        moved = points["xla"][k] - params[k]
        assert float(jnp.abs(moved).max()) > 1e-4, k  # steps of ~1e-3: float32 rounding of p ~1e-7
        np.testing.assert_allclose(points["fused"][k] - params[k], moved, rtol=1e-3, atol=2e-6)
        np.testing.assert_allclose(states["fused"].distance.grad_sum[k],
                                   states["xla"].distance.grad_sum[k], rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("anchored", [False, True])
def test_distance_step_grad_wrt_theta_equals_xla_grad(anchored):
    lopt = NominalLOpt(hidden_size=4, step_size="distance", relative_initial_distance=1e-3,
                       anchored_direction=anchored)
    rng = np.random.default_rng(6)
    shapes = {"w": (9, 6), "b": (6,)}
    params, grads, weights = _draw(rng, shapes), _draw(rng, shapes), _draw(rng, shapes)
    theta = lopt.init(jax.random.key(0))
    theta["network"]["w2"] = 0.5 * jax.random.normal(jax.random.key(1), (4, 2))
    state = lopt.optimizer(theta, num_steps=30).init(params)
    state = state._replace(distance=state.distance._replace(
        params0=jax.tree.map(lambda p: p + 0.5, params)))  # <g, x0 - x> is not zero
    gx = _assert_grad_matches_xla(
        lopt, theta, grads, state, params,
        lambda u, s: (jnp.sum(u["w"] * weights["w"]) + jnp.sum(jnp.sin(s.distance.grad_sum["w"]))
                      + s.distance.numerator))
    assert float(jnp.abs(gx["log_lr"]).max()) > 0


def test_distance_byte_count():
    assert nominal_step.supported(DISTANCE)
    assert nominal_step.bytes_per_param(distance=True) == 52 + 12  # + read grad_sum, x0; write sum


BF16_STATE = NominalLOpt(step_size="distance", relative_initial_distance=1e-5, anchored_direction=True,
                         state_dtype="bfloat16")


@pytest.mark.parametrize("statistics, anchor, kernels", [("kernel", "network", 2), ("xla", "network", 1),
                                                        ("kernel", "table", 2)])
@pytest.mark.parametrize("lopt", [LOPT, DISTANCE, ANCHORED, BF16_STATE],
                         ids=["adam_step", "distance_step", "anchored", "bfloat16_state"])
def test_kernel_lowers_to_triton_for_cuda(lopt, statistics, anchor, kernels):
    """Cross-platform lowering on the CPU runs the Pallas -> Triton lowering a GPU run would: per
    factored tensor the main pass, and the statistics pass unless XLA's reductions replace it."""
    from jax import export

    params = {"w": jnp.ones((64, 32)), "b": jnp.zeros(32)}
    theta = lopt.init(jax.random.key(0))
    state = lopt.optimizer(theta, num_steps=10).init(params)
    cfg = tiles.KernelConfig(block=512, statistics=statistics, anchor=anchor)
    step = jax.jit(lambda g, s, p: nominal_step.nominal_update(lopt, theta, 10, g, s, p,
                                                               interpret=False, apply=True, cfg=cfg))
    triton = export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
    exported = export.export(step, platforms=["cuda"], disabled_checks=[triton])(
        params, state, params)
    assert exported.mlir_module().count("xla.gpu.triton") == kernels


def _kernel_memory_ops(lopt, fold, cfg=None):
    """The reads and writes of the main pass's body, in program order (``"read"``/``"write"`` and
    whether each touches a whole block of rows (``masked_*``), one packed scalar (``get``/``swap``)
    or gathers a value per row from a small table (a ``get`` of a vector: the row and column
    factors, the anchored direction's table))."""
    from jax.extend.core import jaxprs_in_params

    params = {"w": jnp.ones((40, 24))}
    theta = _theta() if lopt is LOPT else lopt.init(jax.random.key(0))
    state = lopt.optimizer(theta, num_steps=10).init(params)

    def step(g, st, p):
        return nominal_step.nominal_update(lopt, theta, 10, g, st, p, interpret=False, apply=True,
                                           cfg=cfg, fold_weights=fold)

    def kernel_body(jaxpr):
        for eqn in jaxpr.eqns:
            # the main pass, not the statistics pass
            if eqn.primitive.name == "pallas_call" and eqn.params["name"] == "lopt_nominal_step":
                return eqn.params["jaxpr"]
            for sub in jaxprs_in_params(eqn.params):
                if (found := kernel_body(sub)) is not None:
                    return found
        return None

    kinds = {"masked_load": ("read", "rows"), "get": ("read", "scalar"),
             "masked_swap": ("write", "rows"), "swap": ("write", "scalar")}
    body = kernel_body(jax.make_jaxpr(step)(params, state, params).jaxpr)
    return [("read", "gather") if e.primitive.name == "get" and e.outvars[0].aval.shape else
            kinds[e.primitive.name] for e in body.eqns if e.primitive.name in kinds]


@pytest.mark.parametrize("config, anchor", [(LOPT, "network"), (ANCHORED, "network"), (ANCHORED, "table"),
                                            (BF16_STATE, "network")],
                         ids=["adam_step", "anchored", "anchored_table", "bfloat16_state"])
@pytest.mark.parametrize("fold", [True, False], ids=["folded", "loaded"])
def test_main_pass_reads_its_block_before_its_first_store(config, anchor, fold):
    """A read the kernel places after a store stays after it in the compiled code (the compilers
    cannot tell the state being read from the state just written), so a block's reads interleaved
    with its stores are that many round trips to memory one after another (3.81 against 3.61 ms on
    an H100, stop 54). Every row read and, with the weights folded in, every scalar read comes
    before the first store; loaded weights are read after (cached scalars), and so are the anchored
    direction's table probes (L1 hits, 7 dependent ones per row: placed before the first store, the
    compilers scheduled them between the load of p, which they need, and the block's other loads)."""
    ops = _kernel_memory_ops(config, fold, tiles.KernelConfig(anchor=anchor))
    first_write = next(i for i, (kind, _) in enumerate(ops) if kind == "write")
    late_reads = [what for kind, what in ops[first_write:] if kind == "read"]
    assert ("read", "rows") in ops[:first_write]
    assert ops[:first_write].count(("read", "gather")) == 2  # the row and the column factor
    table = config.anchored_direction and anchor == "table"
    assert late_reads.count("gather") == (7 + 2 if table else 0)  # the probes, the piece's two
    late_reads = [what for what in late_reads if what != "gather"]
    if fold:
        assert late_reads == []
    else:
        assert "rows" not in late_reads and len(late_reads) >= 138  # the network's weights after b0


@pytest.mark.parametrize("config", [LOPT, ANCHORED], ids=["adam_step", "anchored"])
def test_folded_weights_give_the_loaded_kernels_result_to_the_bit(config):
    """A concrete theta's network weights compiled in as constants (deployment) against the same
    weights read from the packed scalars (as a traced theta is): the same arithmetic, the same bits."""
    rng = np.random.default_rng(8)
    shapes = {"m": (33, 5), "t4": (2, 3, 2, 5), "v": (7,)}
    params, grads = _draw(rng, shapes), _draw(rng, shapes)
    theta = _theta(3) if config is LOPT else config.init(jax.random.key(3))
    theta["network"]["w2"] = 0.5 * jax.random.normal(jax.random.key(4), theta["network"]["w2"].shape)
    state = config.optimizer(theta, num_steps=20).init(params)
    assert nominal_step.folded_weights(theta) is not None
    results = {}
    for fold in (True, False):
        step = jax.jit(lambda g, s, p, fold=fold: nominal_step.nominal_update(
            config, theta, 20, g, s, p, interpret=True, fold_weights=fold))
        s, out = state, None
        for _ in range(3):
            out, s = step(grads, s, params)
        results[fold] = (out, s)
    for a, b in zip(jax.tree.leaves(results[True]), jax.tree.leaves(results[False])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert float(jnp.abs(results[True][0]["m"]).max()) > 0


def test_folded_weights_need_a_concrete_theta():
    theta = LOPT.init(jax.random.key(0))
    folded = nominal_step.folded_weights(theta)
    net = theta["network"]
    assert folded[:48] == tuple(float(x) for x in np.asarray(net["w0"]).ravel())
    assert folded[-2:] == tuple(float(x) for x in np.asarray(net["b2"]))
    assert jax.vmap(lambda th: jnp.asarray(nominal_step.folded_weights(th) is None))(
        jax.tree.map(lambda x: jnp.stack([x, x]), theta)).all()


def test_bfloat16_state_kernel_follows_the_xla_path():
    """bfloat16 state, rounded stochastically: the kernel hashes the same bits as the XLA path, so
    the stored state agrees entry for entry (up to float32 rounding of the values being rounded)
    and the trajectories agree to float32 tolerance over 25 steps."""
    _check_bfloat16_trajectory({"s": (), "v": (7,), "m": (33, 5), "t4": (2, 3, 2, 5), "big": (300, 3)})


def _check_bfloat16_trajectory(shapes, cfg=None):
    config = BF16_STATE
    rng = np.random.default_rng(9)
    params = _draw(rng, shapes)
    theta = config.init(jax.random.key(0))
    theta["network"]["w2"] = 0.05 * jax.random.normal(jax.random.key(1), theta["network"]["w2"].shape)
    theta["network"]["b2"] = jnp.asarray([0.02, -0.01])
    opt = config.optimizer(theta, num_steps=40)
    fused = jax.jit(lambda g, s, p: nominal_step.nominal_update(config, theta, 40, g, s, p, interpret=True,
                                                                cfg=cfg))
    xla = jax.jit(opt.update)
    states, points = {}, {}
    for name, step in (("fused", fused), ("xla", xla)):
        p, s = params, opt.init(params)
        for i in range(25):
            g = jax.tree.map(lambda x, i=i: x - 3.0 + 0.1 * np.sin(i), p)
            u, s = step(g, s, p)
            p = jax.tree.map(jnp.add, p, u)
        states[name], points[name] = s, p
    for tree in ("momentum", "rms"):
        for k in shapes:
            a, b = getattr(states["fused"], tree)[k], getattr(states["xla"], tree)[k]
            assert a.dtype == b.dtype == jnp.bfloat16
            same = float(np.mean(np.asarray(a, np.float32) == np.asarray(b, np.float32)))
            assert same > 0.98, (tree, k, same)  # a value within float32 rounding of a rounding
            np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                       rtol=2**-7, atol=1e-30)  # boundary differs by one unit at most
    np.testing.assert_allclose(states["fused"].distance.distance, states["xla"].distance.distance, rtol=1e-3)
    for k in shapes:
        moved = points["xla"][k] - params[k]
        assert float(jnp.abs(moved).max()) > 1e-4, k
        np.testing.assert_allclose(points["fused"][k] - params[k], moved, rtol=2e-2, atol=2e-5)


def test_bfloat16_state_kernel_keeps_old_state_where_the_gradient_is_not_finite():
    config = BF16_STATE
    params = {"w": jnp.linspace(-1.0, 1.0, 48, dtype=jnp.float32).reshape(8, 6)}
    theta = config.init(jax.random.key(0))
    opt = config.optimizer(theta, num_steps=10)
    state = opt.init(params)
    _, state = opt.update({"w": jnp.ones((8, 6))}, state, params)
    bad = jnp.ones((8, 6)).at[2, 3].set(jnp.nan).at[5, 1].set(jnp.inf)
    u, new = nominal_step.nominal_update(config, theta, 10, {"w": bad}, state, params, interpret=True)
    for tree in ("momentum", "rms"):
        old_t, new_t = getattr(state, tree)["w"], getattr(new, tree)["w"]
        assert new_t.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(new_t[2, 3], np.float32), np.asarray(old_t[2, 3], np.float32))
        np.testing.assert_array_equal(np.asarray(new_t[5, 1], np.float32), np.asarray(old_t[5, 1], np.float32))
    assert float(u["w"][2, 3]) == 0.0 and float(u["w"][5, 1]) == 0.0
    assert bool(jnp.isfinite(new.distance.grad_sum["w"].astype(jnp.float32)).all())


# The persistent main pass (KernelConfig.programs): 16-row blocks over tensors of ranks 2-4 whose
# sizes make 11, 7 and 4 blocks (none a multiple of 3, all fewer than 64 programs).
P_SHAPES = {"s": (), "v": (7,), "m": (33, 5), "t3": (7, 3, 5), "t4": (2, 3, 2, 5)}


def _persistent(programs):
    return tiles.KernelConfig(block=16, programs=programs)


@pytest.mark.parametrize("programs", [1, 3, 64])
def test_persistent_kernel_distance_trajectory_equals_xla(programs):
    """The pretrained optimizer's config (anchored distance step, weights folded in): each program
    loops over several blocks (or, 64 programs, at most one, the rest fully masked) and adds the
    distance step's partial sums over them."""
    _check_distance_trajectory(ANCHORED, P_SHAPES, _persistent(programs))


def test_persistent_kernel_bfloat16_state_follows_the_xla_path():
    _check_bfloat16_trajectory(P_SHAPES, _persistent(3))


@pytest.mark.parametrize("config", [LOPT, BF16_STATE], ids=["adam_step", "bfloat16_state"])
def test_persistent_kernel_gives_the_per_block_kernels_result_to_the_bit(config):
    """The same arithmetic per block, so the same bits (the stochastic rounding of bfloat16 state
    hashes each entry's global index); only the distance step's sums are added in another order."""
    rng = np.random.default_rng(10)
    params, grads = _draw(rng, P_SHAPES), _draw(rng, P_SHAPES)
    theta = config.init(jax.random.key(5))
    theta["network"]["w2"] = 0.5 * jax.random.normal(jax.random.key(6), theta["network"]["w2"].shape)
    state = config.optimizer(theta, num_steps=20).init(params)
    if state.distance is not None:  # <g, x0 - p> is not zero
        state = state._replace(distance=state.distance._replace(
            params0=jax.tree.map(lambda p: p + 0.5, params)))
    results = {}
    for programs in (None, 3):  # 16-row blocks either way
        cfg = _persistent(programs)
        step = jax.jit(lambda g, s, p, cfg=cfg: nominal_step.nominal_update(
            config, theta, 20, g, s, p, interpret=True, apply=True, cfg=cfg))
        results[programs] = step(grads, state, params)
    (pb, sb), (pp, sp) = results[None], results[3]
    for a, b in zip(jax.tree.leaves((pp, sp._replace(distance=None))),
                    jax.tree.leaves((pb, sb._replace(distance=None)))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    if sb.distance is not None:
        for name in ("grad_sum", "params0"):
            for a, b in zip(jax.tree.leaves(getattr(sp.distance, name)),
                            jax.tree.leaves(getattr(sb.distance, name))):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        for name in ("distance", "numerator"):
            np.testing.assert_allclose(getattr(sp.distance, name), getattr(sb.distance, name),
                                       rtol=1e-6)
    assert float(jnp.abs(pp["m"] - params["m"]).max()) > 0


def test_persistent_kernel_vmap_over_tasks_and_theta():
    """Batched theta is traced: the persistent kernel loads the network's weights, per batch entry."""
    rng = np.random.default_rng(3)
    shapes = {"w": (11, 6), "t": (3, 2, 7), "b": (6,)}
    params = _draw(rng, shapes)
    thetas = jax.vmap(_theta)(jnp.arange(2))
    grads = jax.tree.map(lambda *x: jnp.stack(x), *[_draw(rng, shapes) for _ in range(2)])
    state = LOPT.optimizer(_theta(), num_steps=30).init(params)
    fused = jax.jit(jax.vmap(lambda th, g: nominal_step.nominal_update(
        LOPT, th, 30, g, state, params, interpret=True, cfg=_persistent(3))))
    uf, sf = fused(thetas, grads)
    ux, sx = jax.jit(jax.vmap(lambda th, g: _steps(th, g, state, params, False)))(thetas, grads)
    for k, shape in shapes.items():
        assert uf[k].shape == (2, *shape) and _rel_max(uf[k], ux[k]) < 1e-4
    for a, b in zip(jax.tree.leaves(sf), jax.tree.leaves(sx)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_persistent_kernel_lowers_to_triton_for_cuda():
    from jax import export

    lopt = BF16_STATE  # the distance step's partial sums and the rounding's global indices
    params = {"w": jnp.ones((64, 32)), "b": jnp.zeros(32)}
    theta = lopt.init(jax.random.key(0))
    state = lopt.optimizer(theta, num_steps=10).init(params)
    cfg = tiles.KernelConfig(block=128, programs=1056)
    step = jax.jit(lambda g, s, p: nominal_step.nominal_update(lopt, theta, 10, g, s, p,
                                                               interpret=False, apply=True, cfg=cfg))
    triton = export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
    module = export.export(step, platforms=["cuda"], disabled_checks=[triton])(
        params, state, params).mlir_module()
    assert module.count("xla.gpu.triton") == 2 and "grid_x = 1056" in module  # statistics + main pass


@pytest.mark.parametrize("programs", [0, -3, 2.0, True])
def test_persistent_config_is_validated(programs):
    with pytest.raises(ValueError, match=f"programs={programs!r} must be a positive int"):
        tiles.KernelConfig(programs=programs)


def test_persistent_config_is_refused_by_kernels_without_it():
    from lopt.kernels import tiles

    def copy(x_ref, o_ref):
        o_ref[...] = x_ref[...]

    with pytest.raises(ValueError, match="has no persistent variant; use programs=None"):
        tiles.call(copy, [jax.ShapeDtypeStruct((16,), jnp.float32)], rows=16, block=16,
                   cfg=_persistent(2), interpret=True, name="copy")


def test_float16_network_follows_the_float32_step_to_float16_rounding():
    """KernelConfig(network="float16"): the pretrained optimizer's config (distance step, anchored
    direction) with its network in float16 (emulated in interpret mode as the GPU's packed
    multiply-adds compute it): 25 steps stay within float16's rounding of the float32 kernel's, and
    differ from them (the network really ran in float16)."""
    rng = np.random.default_rng(7)
    shapes = {"m": (33, 5), "big": (300, 3), "b": (5,)}
    params = _draw(rng, shapes)
    theta = ANCHORED.init(jax.random.key(0))
    theta["network"]["w2"] = 0.05 * jax.random.normal(jax.random.key(1), theta["network"]["w2"].shape)
    theta["network"]["b2"] = jnp.asarray([0.02, -0.01])
    opt = ANCHORED.optimizer(theta, num_steps=40)
    points = {}
    for network in ("float32", "float16"):
        cfg = tiles.KernelConfig(block=128, num_warps=2, network=network)
        step = jax.jit(lambda g, s, p, cfg=cfg: nominal_step.nominal_update(ANCHORED, theta, 40, g, s, p,
                                                                            interpret=True, cfg=cfg))
        p, s = params, opt.init(params)
        for _ in range(25):
            u, s = step(jax.tree.map(lambda x: x - 3.0, p), s, p)
            p = jax.tree.map(jnp.add, p, u)
        points[network] = p
    for k in ("m", "big"):  # factored tensors: the kernel's (the bias takes the XLA path)
        moved = np.asarray(points["float32"][k] - params[k])
        half = np.asarray(points["float16"][k] - params[k])
        assert np.abs(moved).max() > 1e-3, k
        rel = np.linalg.norm(half - moved) / np.linalg.norm(moved)
        assert 1e-6 < rel < 2e-3, (k, rel)
    # the bias takes the XLA path; it moves with the shared distance estimate only
    np.testing.assert_allclose(points["float16"]["b"], points["float32"]["b"], rtol=1e-5)


def test_float16_network_lowers_to_packed_multiply_adds():
    from jax import export

    params = {"w": jnp.ones((64, 32))}
    theta = ANCHORED.init(jax.random.key(0))
    state = ANCHORED.optimizer(theta, num_steps=10).init(params)
    texts = {}
    for network in ("float32", "float16"):
        cfg = tiles.KernelConfig(block=512, network=network)
        step = jax.jit(lambda g, s, p, cfg=cfg: nominal_step.nominal_update(ANCHORED, theta, 10, g, s, p,
                                                                            interpret=False, cfg=cfg))
        triton = export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
        texts[network] = export.export(step, platforms=["cuda"], disabled_checks=[triton])(
            params, state, params).mlir_module()
    assert "fma.rn.f16x2" in texts["float16"] and "fma.rn.f16x2" not in texts["float32"]


def test_float16_network_options_are_validated():
    with pytest.raises(ValueError, match="network='half'"):
        tiles.KernelConfig(network="half")
    with pytest.raises(ValueError, match="kernel_precision='half'"):
        NominalLOpt(kernel_precision="half")
    params = {"w": jnp.ones((8, 8))}
    state = LOPT.optimizer(_theta(), num_steps=10).init(params)
    with pytest.raises(ValueError, match="block >= 64 \\* num_warps; got block=128, num_warps=4"):
        nominal_step.nominal_update(LOPT, _theta(), 10, params, state, params, interpret=True,
                                    cfg=tiles.KernelConfig(block=128, num_warps=4, network="float16"))


def test_optimizer_option_runs_the_float16_network():
    """NominalLOpt(kernel_precision="float16") reaches the kernel: its updates differ from the float32
    kernel's by float16's rounding."""
    params = {"w": jnp.linspace(-1.0, 1.0, 45).reshape(9, 5)}
    theta = _theta()
    updates = {}
    for precision in ("float32", "float16"):
        lo = NominalLOpt(kernel="interpret", kernel_precision=precision)
        opt = lo.optimizer(theta, num_steps=20)
        updates[precision], _ = jax.jit(opt.update)(jax.tree.map(lambda x: x ** 3 + 0.1, params),
                                                    opt.init(params), params)
    a, b = np.asarray(updates["float16"]["w"]), np.asarray(updates["float32"]["w"])
    assert 0 < np.linalg.norm(a - b) / np.linalg.norm(b) < 3e-3

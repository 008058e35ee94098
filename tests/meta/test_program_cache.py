"""The program cache: exported programs come back from disk with the same numbers, never stale."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.meta.program_cache import ProgramCache, available

pytestmark = pytest.mark.skipif(not available(), reason="jax.export serialisation needs the flatbuffers package")


def _loss_and_grad(params, batch, scale):
    loss, grad = jax.value_and_grad(lambda p: jnp.mean((batch["x"] @ p["w"] + p["b"] - batch["y"]) ** 2))(params)
    return {"loss": loss * scale, "grad": grad}


def _args(rows=5):
    key = jax.random.key(0)
    params = {"w": jax.random.normal(key, (3, 2)), "b": jnp.zeros(2)}
    batch = {"x": jnp.arange(rows * 3.0).reshape(rows, 3) / 10, "y": jnp.ones((rows, 2))}
    return params, batch


def test_a_second_cache_reads_the_program_back_and_computes_the_same_numbers(tmp_path):
    args = _args()
    expected = jax.jit(_loss_and_grad, static_argnames="scale")(*args, scale=2.0)
    first = ProgramCache(tmp_path).compile(_loss_and_grad, args, name="fit", static={"scale": 2.0})
    cache = ProgramCache(tmp_path)
    second = cache.compile(_loss_and_grad, args, name="fit", static={"scale": 2.0})
    assert (cache.hits, cache.misses) == (1, 0)
    for program in (first, second):
        got = program(*args)
        assert got["loss"] == expected["loss"]
        for a, b in zip(jax.tree.leaves(got["grad"]), jax.tree.leaves(expected["grad"])):
            np.testing.assert_array_equal(a, b)
    assert second.record["module_sha256"] == first.record["module_sha256"]
    assert second.from_cache and not first.from_cache
    assert cache.compile(_loss_and_grad, args, name="fit", static={"scale": 2.0}) is second  # kept in memory
    assert (cache.hits, cache.misses) == (2, 0)


def test_each_program_reports_where_making_it_took_its_time(tmp_path):
    for _ in range(2):  # exported, then read back by a second cache
        start = time.perf_counter()
        program = ProgramCache(tmp_path).compile(_loss_and_grad, _args(), name="fit", static={"scale": 2.0})
        wall = time.perf_counter() - start
        assert sorted(program.seconds) == ["compile", "gate", "lower", "module"]
        assert min(program.seconds.values()) >= 0 and sum(program.seconds.values()) <= wall
        assert program.seconds["module"] > 0  # tracing and exporting, or reading the file back
    assert program.from_cache


def test_other_static_values_or_shapes_are_other_programs(tmp_path):
    cache = ProgramCache(tmp_path)
    cache.compile(_loss_and_grad, _args(), name="fit", static={"scale": 2.0})
    other_scale = cache.compile(_loss_and_grad, _args(), name="fit", static={"scale": 3.0})
    other_rows = cache.compile(_loss_and_grad, _args(rows=7), name="fit", static={"scale": 2.0})
    assert (cache.hits, cache.misses) == (0, 3)
    assert float(other_scale(*_args())["loss"]) == pytest.approx(1.5 * float(
        cache.compile(_loss_and_grad, _args(), name="fit", static={"scale": 2.0})(*_args())["loss"]))
    assert other_rows(*_args(rows=7))["grad"]["w"].shape == (3, 2)
    with pytest.raises(ValueError, match="compiled for arguments shaped"):
        other_rows({"w": jnp.ones((3, 2))}, _args()[1])


def test_a_damaged_module_is_never_run_it_is_exported_again(tmp_path):
    args = _args()
    program = ProgramCache(tmp_path).compile(_loss_and_grad, args, name="fit", static={"scale": 1.0})
    module = tmp_path / program.record["module_file"]
    module.write_bytes(module.read_bytes()[:-10] + b"0123456789")
    cache = ProgramCache(tmp_path)
    with pytest.warns(RuntimeWarning, match="does not match the digest"):
        again = cache.compile(_loss_and_grad, args, name="fit", static={"scale": 1.0})
    assert (cache.hits, cache.misses) == (0, 1)
    assert again(*args)["loss"] == program(*args)["loss"]
    assert ProgramCache(tmp_path).compile(_loss_and_grad, args, name="fit", static={"scale": 1.0}).record == again.record


def test_a_program_that_cannot_be_exported_is_compiled_without_the_cache(tmp_path):
    def with_host_callback(x):
        doubled = jax.pure_callback(lambda v: np.asarray(v) * 2, jax.ShapeDtypeStruct(x.shape, x.dtype), x)
        return (doubled + 1,)

    cache = ProgramCache(tmp_path)
    with pytest.warns(RuntimeWarning, match="cannot be exported"):
        program = cache.compile(with_host_callback, (jnp.arange(3.0),), name="callback",
                                describe=lambda jaxpr: {"equations": len(jaxpr.eqns)})
    np.testing.assert_array_equal(program(jnp.arange(3.0))[0], [1.0, 3.0, 5.0])
    assert program.path is None and not list(tmp_path.glob("program-callback*"))
    assert program.record["equations"] > 0  # described from its trace, kept in memory only

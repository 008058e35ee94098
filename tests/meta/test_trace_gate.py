"""The tracing gate: its setting, its bound on concurrent tracers, and its compiled-program cache."""

import functools
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lopt.meta import trace_gate


@pytest.mark.parametrize("setting", ["0", "-2", "two", "1.5"])
def test_bad_setting_is_refused_with_the_variable_named(monkeypatch, setting):
    monkeypatch.setenv(trace_gate.THREADS_ENV, setting)
    with pytest.raises(ValueError, match="LOPT_TRACE_THREADS"):
        trace_gate.trace_threads()


def test_default_and_explicit_setting(monkeypatch):
    monkeypatch.delenv(trace_gate.THREADS_ENV, raising=False)
    assert trace_gate.trace_threads() == 2
    monkeypatch.setenv(trace_gate.THREADS_ENV, "5")
    assert trace_gate.trace_threads() == 5


@pytest.mark.parametrize("threads", [1, 3])
def test_at_most_the_set_number_of_threads_trace_at_once(monkeypatch, threads):
    monkeypatch.setenv(trace_gate.THREADS_ENV, str(threads))
    inside, most, lock = 0, 0, threading.Lock()

    def work():
        nonlocal inside, most
        with trace_gate.tracing():
            with lock:
                inside += 1
                most = max(most, inside)
            time.sleep(0.05)
            with lock:
                inside -= 1

    workers = [threading.Thread(target=work) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert most == threads


def test_compiled_program_matches_the_jitted_call_and_is_reused():
    @functools.partial(jax.jit, static_argnames=("scale",))
    def f(tree, scale):
        return jax.tree.map(lambda x: jnp.sin(x) * scale, tree)

    args = {"a": jnp.arange(4.0), "b": jnp.ones((2, 3))}
    program = trace_gate.compile_gated(f, args, scale=3)
    for x, y in zip(jax.tree.leaves(program(args)), jax.tree.leaves(f(args, scale=3))):
        np.testing.assert_allclose(x, y, rtol=1e-6)
    other = {"a": jnp.zeros(4), "b": jnp.full((2, 3), 2.0)}
    assert trace_gate.compile_gated(f, other, scale=3) is program  # same shapes and static value
    assert trace_gate.compile_gated(f, other, scale=4) is not program
    assert trace_gate.compile_gated(f, {"a": jnp.zeros(5), "b": jnp.ones((2, 3))}, scale=3) is not program


def test_a_plain_function_is_refused():
    with pytest.raises(TypeError, match="jax.jit"):
        trace_gate.compile_gated(lambda x: x, jnp.ones(2))


def test_docstring_example_runs():
    import doctest

    assert doctest.testmod(trace_gate).failed == 0

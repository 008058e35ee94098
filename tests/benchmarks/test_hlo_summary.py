"""benchmarks/hlo_summary.py: the launches of a compiled program, counted from its text."""
import os
import sys

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import hlo_summary

# the shape of XLA's optimized text: a loop whose body copies a scalar and a [4, 3] array each trip
TEXT = """HloModule jit_step

%fused_add (p0: f32[8]) -> f32[8] {
  %p0 = f32[8]{0} parameter(0)
  %copy.9 = f32[8]{0} copy(%p0)
  ROOT %add.1 = f32[8]{0} add(%copy.9, %copy.9)
}

%body (t: (s32[], f32[4,3])) -> (s32[], f32[4,3]) {
  %t = (s32[], f32[4,3]{1,0}) parameter(0)
  %copy.1 = s32[] copy(%gte.0)
  %copy.2 = f32[4,3]{1,0} copy(%gte.1)
  ROOT %tuple.1 = (s32[], f32[4,3]{1,0}) tuple(%copy.1, %copy.2)
}

%cond (t: (s32[], f32[4,3])) -> pred[] {
  %t = (s32[], f32[4,3]{1,0}) parameter(0)
  ROOT %lt = pred[] fusion(%t), kind=kLoop, calls=%fused_add
}

ENTRY %main (x: f32[8], y: f32[4,3]) -> (f32[8], f32[4,3]) {
  %x = f32[8]{0} parameter(0)
  %k = (f32[8]{0}, f32[2]{0}, f32[2]{0}, f32[2]{0}, f32[2]{0}, /*index=5*/f32[2]{0}) custom-call(%x), custom_call_target="__gpu$xla.gpu.triton"
  %f = f32[8]{0} fusion(%x), kind=kLoop, calls=%fused_add
  %copy.3 = bf16[8]{0} copy(%f)
  %w = (s32[], f32[4,3]{1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"5"}}
  ROOT %r = (f32[8]{0}, f32[4,3]{1,0}) tuple(%f, %w)
}
"""


def test_counts_launches_with_loop_bodies_once_per_trip():
    s = hlo_summary.summarise(TEXT)
    assert (s["while_loops"], s["while_trips"]) == (1, 5)
    # 1 copy in the entry (bf16[8]: 16 B) and 2 per trip (4 + 48 B); the copy inside the fusion is
    # part of that fusion's kernel, not a launch
    assert s["copies"] == 1 + 2 * 5
    assert s["copy_bytes"] == 16 + 5 * (4 + 48)
    assert s["copy_shapes"] == {"bf16[8]{0}": 1, "s32[]": 5, "f32[4,3]{1,0}": 5}
    # the entry's fusion, and the condition's once per trip; the six-output custom call is read whole
    assert (s["fusions"], s["custom_calls"]) == (1 + 5, 1)


def test_reads_a_program_jax_compiled():
    f = jax.jit(lambda x: jax.lax.fori_loop(0, 3, lambda i, y: jnp.sin(y) * 2.0, x) + 1.0)
    s = hlo_summary.summarise(f.lower(jnp.ones(4)).compile().as_text())
    assert (s["while_loops"], s["while_trips"]) == (1, 3)
    straight = jax.jit(lambda x: jnp.sin(x) * 2.0 + 1.0)
    s = hlo_summary.summarise(straight.lower(jnp.ones(4)).compile().as_text())
    assert (s["while_loops"], s["while_trips"], s["copies"]) == (0, 0, 0)


def test_refuses_text_without_an_entry():
    with pytest.raises(ValueError, match="no ENTRY computation"):
        hlo_summary.summarise("%fused (p: f32[2]) -> f32[2] {\n}\n")


def test_pretrained_step_writes_its_momenta_and_second_moment_in_place():
    """The XLA path reads each per-entry accumulator once, where it writes the new one (stop 56):
    a donated step copies none of them (the params, which the step's sums read again before
    apply_updates writes them, still are)."""
    import optax

    import lopt

    params = {"w": jnp.ones((64, 32)) * 0.01, "b": jnp.zeros((32,))}
    opt = lopt.pretrained.optimizer(num_steps=100)

    def step(p, s, g):
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s

    text = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt.init(params), params).compile().as_text()
    shapes = hlo_summary.summarise(text)["copy_shapes"]
    assert not [s for s in shapes if s.startswith(("f32[64,32,3]", "f32[32,3]"))]  # the momenta
    assert shapes.get("f32[64,32]{1,0}", 0) <= 1  # the params; not the second moment, gradient sum

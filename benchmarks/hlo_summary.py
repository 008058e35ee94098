"""What a compiled XLA program does besides its kernels: copies, loops and launches, from its text.

A fused optimizer step should be its kernels and a few small reductions. Two things XLA may add
cost a fixed time per step whatever the model's size, and do not show in a count of bytes:

* ``copy`` instructions, which a GPU runs as device memcpys (``memcpy32_post`` in a trace: on an
  H100, stop 56, 24 of them took 0.39 ms of a 3.43 ms step although each moved a few kilobytes);
* ``while`` loops, each trip its own launches with the loop condition read back by the host.

:func:`summarise` reads ``compiled.as_text()`` and counts the instructions that run as their own
launches: those of the entry computation, of computations it calls, and of loop bodies and
conditions (times their known trip counts), not those inside fusions, which are one kernel each.

Example:
    >>> import jax, jax.numpy as jnp
    >>> f = jax.jit(lambda x: jax.lax.fori_loop(0, 3, lambda i, y: y * 2.0, x) + 1.0)
    >>> s = summarise(f.lower(jnp.ones(4)).compile().as_text())
    >>> s["while_loops"], s["while_trips"]
    (1, 3)
"""

from __future__ import annotations

import re

_COMPUTATION = re.compile(r"^(ENTRY )?%([\w.\-]+) ")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%[\w.\-]+ = (\((?:[^()]|\([^()]*\))*\)|[\w\[\]{},:]+) ([\w\-]+)\(")
_CALLEE = re.compile(r"(?:condition|body)=%([\w.\-]+)")
_CALLED = re.compile(r"to_apply=%([\w.\-]+)")
_TRIPS = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
_ARRAY = re.compile(r"(pred|[sfu]\d+|bf16)\[([\d,]*)\]")
_BYTES = {"pred": 1, "bf16": 2}


def _bytes(shape: str) -> int:
    """Bytes of an HLO shape (a tuple's arrays summed)."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        size = _BYTES.get(dtype) or int(dtype[1:]) // 8
        for d in filter(None, dims.split(",")):
            size *= int(d)
        total += size
    return total


def summarise(hlo_text: str) -> dict:
    """Counts of the launches in an optimized HLO module's text (``compiled.as_text()``).

    Returns:
        ``{"copies", "copy_bytes", "loop_copies", "loop_copy_bytes", "while_loops", "while_trips",
        "custom_calls", "fusions", "copy_shapes"}``: copies and their bytes (``loop_*``: those
        inside loops), loops and their trips (unknown trip counts count 1), custom calls
        (Pallas/Triton kernels among them) and fusions, per run of the program; loop bodies count
        once per trip. ``copy_shapes``: the shapes copied, by count.
    """
    computations: dict[str, list[tuple[str, str, str]]] = {}
    entry, current = None, None
    for line in hlo_text.splitlines():
        head = _COMPUTATION.match(line)
        if head and line.rstrip().endswith("{"):
            current = head.group(2)
            computations[current] = []
            if head.group(1):
                entry = current
            continue
        found = _INSTRUCTION.match(line)
        if found and current is not None:
            computations[current].append((found.group(2), found.group(1), line))
    if entry is None:
        raise ValueError("summarise: no ENTRY computation in this text; pass compiled.as_text() of "
                         "a jitted function (jax.jit(f).lower(...).compile().as_text()).")
    counts = {"copies": 0, "copy_bytes": 0, "loop_copies": 0, "loop_copy_bytes": 0, "while_loops": 0,
              "while_trips": 0, "custom_calls": 0, "fusions": 0, "copy_shapes": {}}

    def visit(name: str, times: int, in_loop: bool = False) -> None:
        for opcode, shape, line in computations.get(name, []):
            if opcode == "copy":
                counts["copies"] += times
                counts["copy_bytes"] += times * _bytes(shape)
                if in_loop:
                    counts["loop_copies"] += times
                    counts["loop_copy_bytes"] += times * _bytes(shape)
                counts["copy_shapes"][shape] = counts["copy_shapes"].get(shape, 0) + times
            elif opcode == "custom-call":
                counts["custom_calls"] += times
            elif opcode == "fusion":
                counts["fusions"] += times
            elif opcode == "call" and (m := _CALLED.search(line)):  # XLA:CPU wraps loops in calls
                visit(m.group(1), times, in_loop)
            elif opcode == "while":
                trips = int(m.group(1)) if (m := _TRIPS.search(line)) else 1
                counts["while_loops"] += times
                counts["while_trips"] += times * trips
                for callee in _CALLEE.findall(line):  # body and condition, once per trip
                    visit(callee, times * trips, True)

    visit(entry, 1)
    return counts

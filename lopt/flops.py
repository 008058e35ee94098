"""Floating-point operations of a JAX function, counted from its jaxpr with loops multiplied out.

XLA's cost analysis (``jax.jit(f).lower(...).cost_analysis()``, before or after compiling) counts
the body of a loop **once**, whatever its trip count: a ``lax.scan`` of 100 matrix products
reports the FLOPs of one. A meta-training step is a scan over inner steps (and a recurrent task
adds a scan over its sequence inside each), so its FLOP/s computed that way are too low by the
trip counts, and by different factors for different programs. :func:`count_flops` walks the
jaxpr instead and multiplies each ``scan`` body by its length.

Counting rules (the conventions of XLA's cost analysis for the ops themselves):

* ``dot_general``: 2 per multiply-add (``2 * output size * contracted size``);
* ``conv_general_dilated``: 2 per multiply-add, counting only the kernel taps that land on a
  real input element (not padding, not the holes of a dilated input, as in a strided
  convolution's input gradient);
* elementwise arithmetic and comparisons: 1 per output element; reductions: 1 per input element;
* data movement (reshape, broadcast, slice, gather, transpose, concatenate, ...): 0;
* ``scan``: ``length`` times its body; ``cond``: the costliest branch; calls (``pjit``, custom
  derivatives, remat): their body;
* ``while`` (a loop whose trip count is not static): its body **once**, and
  :attr:`FlopCount.unbounded_loops` counts them, so a caller can tell an exact count from a
  lower bound. Fused kernels (``pallas_call``) count 0 and are listed in
  :attr:`FlopCount.opaque`.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from lopt.flops import count_flops
    >>> x = jnp.ones((8, 8))
    >>> count_flops(lambda x: x @ x, x).flops              # 2 * 8 * 8 * 8
    1024.0
    >>> step = lambda c, _: (c @ c, None)
    >>> count_flops(lambda x: jax.lax.scan(step, x, None, length=10)[0], x).flops
    10240.0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core
import numpy as np

__all__ = ["FlopCount", "count_flops", "jaxpr_flops", "xla_cost_analysis_flops"]

# Elementwise primitives that do arithmetic: 1 FLOP per output element (XLA counts these).
_ELEMENTWISE = frozenset((
    "add", "sub", "mul", "div", "rem", "pow", "integer_pow", "neg", "sign", "abs", "max", "min", "exp",
    "exp2", "log", "log1p", "expm1", "tanh", "logistic", "sin", "cos", "tan", "asin", "acos", "atan",
    "atan2", "sinh", "cosh", "asinh", "acosh", "atanh", "sqrt", "rsqrt", "cbrt", "erf", "erfc", "erf_inv",
    "lgamma", "digamma", "floor", "ceil", "round", "nextafter", "square", "reciprocal", "is_finite",
    "select_n", "clamp", "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "xor", "add_any"))
_REDUCTIONS = frozenset((
    "reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or", "argmax", "argmin",
    "cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"))
_OPAQUE = frozenset({"pallas_call", "custom_call", "ffi_call", "pure_callback", "io_callback"})


@dataclasses.dataclass(frozen=True)
class FlopCount:
    """Result of :func:`count_flops`.

    Attributes:
        flops: floating-point operations, scan bodies multiplied by their lengths.
        unbounded_loops: ``while`` loops met (each counted once: ``flops`` is then a lower bound).
        opaque: primitives whose work is not visible in the jaxpr (fused kernels), counted 0.
    """

    flops: float
    unbounded_loops: int = 0
    opaque: tuple[str, ...] = ()

    @property
    def exact(self) -> bool:
        """Whether every loop had a static trip count and no op was opaque."""
        return self.unbounded_loops == 0 and not self.opaque

    def __add__(self, other: FlopCount) -> FlopCount:
        return FlopCount(self.flops + other.flops, self.unbounded_loops + other.unbounded_loops,
                         tuple(sorted(set(self.opaque) | set(other.opaque))))

    def scaled(self, factor: float) -> FlopCount:
        """This count repeated ``factor`` times (the loop and opaque records are kept once)."""
        return FlopCount(self.flops * factor, self.unbounded_loops, self.opaque)


def _size(var: Any) -> int:
    return math.prod(getattr(var.aval, "shape", ()))


def _dot_flops(eqn: Any) -> float:
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    contracted = math.prod(lhs_shape[d] for d in lhs_contract)
    return 2.0 * _size(eqn.outvars[0]) * contracted


def _valid_taps(in_size: int, kernel: int, out_size: int, stride: int, low_pad: int, lhs_dilation: int,
                rhs_dilation: int) -> int:
    """(output position, kernel tap) pairs of one spatial axis that land on a real input element
    (not padding, not a hole of a dilated input): what XLA's cost analysis counts too."""
    out = np.arange(out_size)[:, None]
    tap = np.arange(kernel)[None, :]
    pos = out * stride + tap * rhs_dilation - low_pad
    valid = (pos >= 0) & (pos <= (in_size - 1) * lhs_dilation) & (pos % lhs_dilation == 0)
    return int(valid.sum())


def _conv_flops(eqn: Any) -> float:
    p = eqn.params
    lhs_shape, rhs_shape = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    out_shape = eqn.outvars[0].aval.shape
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    taps = 1
    for i, (ld, rd, od) in enumerate(zip(lhs_spec[2:], rhs_spec[2:], out_spec[2:])):
        taps *= _valid_taps(lhs_shape[ld], rhs_shape[rd], out_shape[od], p["window_strides"][i],
                            p["padding"][i][0], p["lhs_dilation"][i], p["rhs_dilation"][i])
    batch, out_features, in_features = out_shape[out_spec[0]], out_shape[out_spec[1]], rhs_shape[rhs_spec[1]]
    return 2.0 * batch * out_features * in_features * taps


def _equation(eqn: Any) -> FlopCount:
    name = eqn.primitive.name
    if name == "dot_general":
        return FlopCount(_dot_flops(eqn))
    if name == "conv_general_dilated":
        return FlopCount(_conv_flops(eqn))
    if name in _ELEMENTWISE:
        return FlopCount(float(sum(_size(v) for v in eqn.outvars)))
    if name in _REDUCTIONS:
        return FlopCount(float(sum(_size(v) for v in eqn.invars)))
    if name in _OPAQUE:
        return FlopCount(0.0, 0, (name,))
    if name == "scan":
        return jaxpr_flops(eqn.params["jaxpr"]).scaled(eqn.params["length"])
    if name == "cond":
        branches = [jaxpr_flops(b) for b in eqn.params["branches"]]
        costliest = max(branches, key=lambda c: c.flops)
        return FlopCount(costliest.flops, max(b.unbounded_loops for b in branches),
                         tuple(sorted({o for b in branches for o in b.opaque})))
    if name == "while":
        body = jaxpr_flops(eqn.params["body_jaxpr"]) + jaxpr_flops(eqn.params["cond_jaxpr"])
        return FlopCount(body.flops, body.unbounded_loops + 1, body.opaque)
    total = FlopCount(0.0)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):  # pjit, custom_jvp/vjp, remat, ...
        total = total + jaxpr_flops(sub)
    return total


def jaxpr_flops(jaxpr: Any) -> FlopCount:
    """FLOPs of a (closed) jaxpr; see the module docs for the rules.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> closed = jax.make_jaxpr(lambda x: jnp.sum(x * 2.0))(jnp.ones(5))
        >>> jaxpr_flops(closed).flops                     # 5 multiplies + 5 summed
        10.0
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = FlopCount(0.0)
    for eqn in jaxpr.eqns:
        total = total + _equation(eqn)
    return total


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> FlopCount:
    """Traces ``fn(*args, **kwargs)`` (nothing is compiled or run) and counts its FLOPs.

    Args:
        fn: any JAX-traceable function (a ``jax.jit``-wrapped one too).
        *args, **kwargs: example arguments (arrays or ``jax.ShapeDtypeStruct``).

    Returns:
        A :class:`FlopCount`.

    Raises:
        TypeError: ``fn`` is not callable.
    """
    if not callable(fn):
        raise TypeError(f"count_flops needs a function, got {type(fn).__name__}: pass the function and "
                        "its example arguments, e.g. count_flops(step, params, batch).")
    return jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs))


def xla_cost_analysis_flops(compiled: Any, *, default: float = float("nan")) -> float:
    """XLA's own FLOP figure for a compiled (or lowered) program: every loop body counted once.

    Kept beside :func:`jaxpr_flops` for reference; ``default`` where the backend reports none.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.ones((8, 8))
        >>> xla_cost_analysis_flops(jax.jit(lambda x: x @ x).lower(x).compile())
        1024.0
    """
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", default))

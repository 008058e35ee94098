"""``torch.compile`` for a port's per-chunk rows function, with a clean fallback to eager.

``LearnedOptimizer(..., compile=True)`` compiles the elementwise form of an architecture's
per-parameter step (``rows_fused``), so features, network, state and update fuse into one
loop over the rows. Where ``torch.compile`` cannot run (no ``torch.compile``, an unsupported
Python or platform, no C++ compiler for the CPU backend, any compiler failure), the
optimizer warns once with the reason and steps with the eager form, which gives the same
results. A failed compilation happens before any state is touched (``fullgraph=True``: the
whole function is one graph, compiled before it runs), so falling back loses nothing.

Example:
    >>> import torch, warnings
    >>> def double(x, out):
    ...     torch.mul(x, 2.0, out=out)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     rows = CompiledRows(double, double, reason="no compiler in this example")
    >>> str(caught[0].message).split(";")[0]
    'lopt.torch: compile=True but no compiler in this example'
    >>> out = torch.empty(2)
    >>> rows(torch.ones(2), out)
    >>> out.tolist(), rows.active
    ([2.0, 2.0], False)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

__all__ = ["CompiledRows", "compile_unavailable_reason"]


def compile_unavailable_reason() -> str | None:
    """Why ``torch.compile`` cannot run here, or ``None`` when it can be tried.

    Example:
        >>> compile_unavailable_reason() is None or isinstance(compile_unavailable_reason(), str)
        True
    """
    if not hasattr(torch, "compile"):
        return f"PyTorch {torch.__version__} has no torch.compile (it needs PyTorch >= 2.0)"
    try:
        import torch._dynamo as dynamo
    except ImportError as e:  # pragma: no cover - depends on the PyTorch build
        return f"torch._dynamo cannot be imported ({e})"
    if not dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python version or platform"
    return None


class CompiledRows:
    """Calls the compiled ``fused`` form, or ``eager`` once compiling is found impossible.

    Args:
        eager: the eager rows function (same signature and results as ``fused``).
        fused: the elementwise rows function to compile.
        reason: set to skip compiling (the reason is warned, once, at construction).
    """

    def __init__(self, eager: Callable, fused: Callable, *, reason: str | None = None):
        self._eager = eager
        self._fn: Callable | None = None
        if reason is None:
            reason = compile_unavailable_reason()
        if reason is None:
            self._fn = torch.compile(fused, dynamic=True, fullgraph=True)
        else:
            self._warn(reason)

    @property
    def active(self) -> bool:
        """Whether calls go to the compiled function (False after a fallback)."""
        return self._fn is not None

    @staticmethod
    def _warn(reason: str) -> None:
        warnings.warn(
            f"lopt.torch: compile=True but {reason}; the optimizer steps with its eager "
            "kernels instead (same results, slower). Pass compile=False to silence this.",
            RuntimeWarning,
            stacklevel=4,
        )

    def __call__(self, *args):
        if self._fn is not None:
            try:
                return self._fn(*args)
            except Exception as e:
                if not _is_compile_failure(e):
                    raise
                self._fn = None
                self._warn(f"torch.compile failed ({type(e).__name__}: {str(e)[:300]})")
        return self._eager(*args)


def _is_compile_failure(error: Exception) -> bool:
    """Whether ``error`` comes from compiling (dynamo, inductor, the C++/Triton toolchain)."""
    try:
        from torch._dynamo.exc import TorchDynamoException
    except ImportError:  # pragma: no cover
        return False
    if isinstance(error, TorchDynamoException):
        return True
    module = type(error).__module__ or ""
    return module.startswith(("torch._inductor", "torch._dynamo", "triton"))

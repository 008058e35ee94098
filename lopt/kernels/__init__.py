"""Fused Pallas steps of learned optimizers, with the plain XLA path as reference.

A learned optimizer's step on a large model is bounded by memory bandwidth: the XLA path
writes the per-parameter network's ``[params, hidden]`` activations to memory between
layers. The kernels here read each parameter's gradient, value and accumulators, evaluate
the network in registers and write the results: one main pass per tensor plus the passes
that per-tensor reductions need (see each module's ``passes()``).

The architectures call :func:`resolve` when their step is traced; the mode (``"xla"`` by
default; ``"auto"`` picks the kernel on GPU) is set with :func:`set_mode`,
:func:`mode_scope` or ``$LOPT_KERNELS``. See ``docs/kernels.md``.

Example:
    >>> from lopt import kernels
    >>> kernels.get_mode() in kernels.MODES
    True
"""

from lopt.kernels.select import MODES, get_mode, mode_scope, resolve, set_mode

__all__ = ["MODES", "get_mode", "mode_scope", "resolve", "set_mode"]

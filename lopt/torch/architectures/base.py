"""The contract of a PyTorch port of one learned-optimizer architecture.

A port holds theta (float32 tensors, one copy per device) and the architecture's static
config (the JAX :class:`lopt.learned.LearnedOptimizer` read from the theta file). The
:class:`lopt.torch.LearnedOptimizer` calls it once per step for all tensors of a param group
that share a device and a step count:

* :meth:`Port.init_state` makes the accumulators of one parameter (float32, or bfloat16 where
  the architecture's ``state_dtype`` asks for it and the port supports it), in the same layout
  as the JAX state (``(*p.shape, k)``);
* :meth:`Port.update` updates those accumulators in place and returns the float32 updates
  (what the JAX transformation returns: ``params_new = params + update``).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch

from lopt.learned.base import LearnedOptimizer as JaxLearnedOptimizer
from lopt.torch import stochastic_rounding as SR
from lopt.torch.chunks import Plan
from lopt.torch.compiled import CompiledRows

__all__ = ["Port", "tree_to"]

Tree = Any


def tree_to(tree: Tree, device: torch.device) -> Tree:
    """Moves the tensors of a tree of dicts/lists/tuples to ``device``."""
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: tree_to(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_to(v, device) for v in tree)
    raise TypeError(f"theta leaf of type {type(tree).__name__} is not a tensor.")


class Port(abc.ABC):
    """One architecture's update rule on lists of PyTorch tensors.

    Args:
        arch: the JAX learned optimizer (its static config).
        theta: theta as a tree of float32 CPU tensors, structured like ``arch.init(key)``.
    """

    #: Registry name of the architecture this port implements.
    name: ClassVar[str] = ""

    #: ``(eager, fused)`` per-chunk rows functions of ports with a per-parameter network:
    #: :meth:`use_compile` compiles the fused one. ``None``: the step is already a few
    #: ``torch._foreach_*`` kernels and is not compiled.
    rows_forms: ClassVar[tuple[Any, Any] | None] = None

    #: Whether :meth:`update` already returns finite updates (non-finite entries set to 0 where
    #: they are made); otherwise the optimizer replaces them, one more pass per tensor.
    finite_updates: ClassVar[bool] = False

    #: Whether every state write of :meth:`update` already keeps the old value of an entry it would
    #: make NaN or infinite (as JAX masks the state); otherwise the optimizer checks the gradients
    #: on the host each step and, when one is not finite, copies the state first and restores it.
    masks_state: ClassVar[bool] = False

    #: Whether the port implements ``state_dtype="bfloat16"`` (stochastically rounded state, bit
    #: for bit as JAX rounds it: :mod:`lopt.torch.stochastic_rounding`).
    bfloat16_state: ClassVar[bool] = False

    def __init__(self, arch: JaxLearnedOptimizer, theta: Tree):
        state_dtype = getattr(arch, "state_dtype", "float32")
        if state_dtype != "float32" and not self.bfloat16_state:
            raise ValueError(f"lopt.torch keeps the {arch.name} optimizer's state in float32; "
                             f"state_dtype={state_dtype!r} (stochastically rounded bfloat16 state) is "
                             "implemented in JAX only for it. Use arch.with_execution_options(state_dtype='float32').")
        #: The dtype of the per-parameter accumulators (float32, or bfloat16 with ``state_dtype``).
        self.state_dtype = torch.bfloat16 if state_dtype == "bfloat16" else torch.float32
        self.arch = arch
        self._theta = {torch.device("cpu"): theta}
        self._compiled: CompiledRows | None = None
        self._rounding: CompiledRows | None = None  # the compiled rounding of bfloat16 state
        self._plans: dict[tuple, Plan] = {}

    def use_compile(self) -> None:
        """Steps with the ``torch.compile``-d rows function, and with bfloat16 state the compiled
        rounding (warns and stays eager where compiling is impossible; a no-op for ports without
        a rows function)."""
        if self.rows_forms is not None:
            eager, fused = self.rows_forms
            self._compiled = CompiledRows(eager, fused)
            if self.state_dtype != torch.float32 and self._compiled.active:
                self._rounding = CompiledRows(_round_chunk_rows, _round_chunk_rows)

    def round_chunk(self, m: torch.Tensor, v: torch.Tensor | None, plan: Plan, chunk: int, step: int,
                    salts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A chunk's new float32 momenta ``[n, k]`` and second moment ``[n]`` (or ``None``) rounded
        to bfloat16 (roles ``0..k-1`` and ``k`` of each row's bits), as JAX rounds the state;
        ``salts[t]`` is tensor ``t``'s salt. One fused pass after :meth:`use_compile`."""
        tensor, index = plan.row_positions(chunk, m.device)
        if self._rounding is not None:  # the step as a tensor: one compiled program for every step
            return self._rounding(m, v, index, tensor, salts, torch.tensor(step, dtype=torch.int64, device=m.device))
        # eagerly, the [n, k] tile in one pass per operation and the step folded into the hash's constant
        bits = SR.random_bits(index, step, salts[tensor])
        return SR.round_columns(m, bits), None if v is None else SR.to_bfloat16(v, SR.split_bits(bits, m.shape[1]))

    def plan(self, sizes: list[int], device: torch.device, rows: int) -> Plan:
        """The chunk plan of ``rows`` rows for tensors of ``sizes`` elements (cached).

        Off the CPU, tensors of at least ``rows // 16`` elements get chunks of their own: a
        chunk across tensor boundaries copies its pieces in and out (``cat``), which on a GPU
        costs more than the extra launch of a short chunk. On the CPU chunks are cache-sized
        and launches are what costs, so they are filled across tensors.
        """
        key = (tuple(sizes), device.type, rows)
        if key not in self._plans:
            self._plans[key] = Plan(sizes, rows, alone=None if device.type == "cpu" else max(1, rows // 16))
        return self._plans[key]

    @property
    def needs_loss(self) -> bool:
        """Whether the update reads the training loss."""
        return self.arch.needs_loss

    def needs_num_steps(self) -> bool:
        """Whether the update needs the horizon ``num_steps``."""
        return self.arch.requires_num_steps()

    def theta(self, device: torch.device) -> Tree:
        """Theta on ``device`` (copied once per device, then cached)."""
        if device not in self._theta:
            self._theta[device] = tree_to(self._theta[torch.device("cpu")], device)
        return self._theta[device]

    @abc.abstractmethod
    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        """Zero accumulators of one parameter, by name (``param`` may be on "meta")."""

    @abc.abstractmethod
    def update(
        self,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        states: list[dict[str, torch.Tensor]],
        count: int,
        loss: torch.Tensor | None,
        num_steps: int | None,
        positions: list[int] | None = None,
    ) -> list[torch.Tensor]:
        """One step for tensors on one device that share the step ``count``.

        Args:
            params: the parameters (any float dtype), before the update.
            grads: their gradients.
            states: each parameter's accumulators, updated in place.
            count: updates made so far (0 on the first step).
            loss: the training loss as a float32 0-d tensor on the params' device, or
                ``None`` when the architecture does not read it.
            num_steps: the horizon, or ``None`` when not needed.
            positions: each tensor's position among all of the optimizer's parameters (the
                leaf index JAX salts the stochastic rounding of bfloat16 state with); ``None``:
                ``0, 1, ...``. Read only by ports with :attr:`bfloat16_state`.

        Returns:
            The float32 updates, shaped like ``params``.
        """


def _round_chunk_rows(m: torch.Tensor, v: torch.Tensor | None, index: torch.Tensor, tensor: torch.Tensor,
                      salts: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`lopt.torch.stochastic_rounding.round_rows` of rows from the tensors ``tensor``."""
    return SR.round_rows(m, v, index, salts[tensor], step)

"""Where one parameter's optimizer state lives: the per-coordinate slots of any optimizer state.

Probes that look at a single parameter (its update function, its state dynamics) need to read and
write *that parameter's* part of the optimizer state without knowing the optimizer. A
:class:`StateLayout` finds it from the state and the params alone:

* a subtree of the state with the params' tree structure (optax's ``mu``/``nu``/``trace``, the
  ``momentum`` of lopt's MLP optimizer) holds, for parameter leaf ``j``, a leaf of shape
  ``p_j.shape`` or ``p_j.shape + (k,)``: ``k`` slots per coordinate;
* a leaf of shape ``[N, k...]`` with ``N`` the total number of parameters (the LSTM optimizer's
  hidden state, coordinates ordered as the flattened params) holds ``k`` slots per coordinate;
* everything else is global: step counters (integer leaves) and per-tensor statistics.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["StateLayout", "leaf_names", "path_name", "tensor_kind"]


def leaf_names(tree: Any) -> list[str]:
    """Readable names of a pytree's leaves: ``[{"w": 1}]`` -> ``["0/w"]``.

    Example:
        >>> leaf_names([{"b": 0, "w": 1}])
        ['0/b', '0/w']
    """
    return [path_name(path) or "params" for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def path_name(path: tuple) -> str:
    """A key path as ``"0/mu"`` (dict keys, sequence indices and attribute names joined by ``/``)."""
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def tensor_kind(shape: tuple[int, ...]) -> str:
    """``"weight"`` (2 or more dims), ``"bias"`` (vector) or ``"scalar"``."""
    return "weight" if len(shape) >= 2 else ("bias" if len(shape) == 1 else "scalar")


@dataclasses.dataclass(frozen=True)
class _Slot:
    index: int  # position among the state's flat leaves
    name: str
    param_leaf: int | None  # aligned with this params leaf, or None for a flat [N, ...] leaf
    width: int  # slots per coordinate


@dataclasses.dataclass(frozen=True)
class StateLayout:
    """The per-coordinate slots of an optimizer state.

    Attributes:
        treedef: the state's tree structure.
        slots: per-coordinate float leaves (their position, name, aligned params leaf, width).
        counters: positions of integer leaves (step counters).
        param_shapes: shapes of the params leaves.
        slot_names: one name per per-coordinate state value, e.g. ``("0/mu", "0/nu")``.

    Example:
        >>> import jax.numpy as jnp, optax
        >>> params = {"w": jnp.ones((2, 3))}
        >>> layout = StateLayout.of(optax.adam(1e-3).init(params), params)
        >>> layout.slot_names
        ('0/mu', '0/nu')
    """

    treedef: Any
    slots: tuple[_Slot, ...]
    counters: tuple[int, ...]
    param_shapes: tuple[tuple[int, ...], ...]
    slot_names: tuple[str, ...]

    @classmethod
    def of(cls, state: Any, params: Any) -> StateLayout:
        """Finds the layout of ``state`` (an optimizer state for ``params``)."""
        params_def = jax.tree.structure(params)
        shapes = tuple(tuple(np.shape(p)) for p in jax.tree.leaves(params))
        total = sum(math.prod(s) for s in shapes)
        treedef = jax.tree.structure(state)
        is_params_like = (lambda x: jax.tree.structure(x) == params_def) if not jax.tree_util.treedef_is_leaf(params_def) else None
        nodes, _ = jax.tree_util.tree_flatten_with_path(state, is_leaf=is_params_like)
        slots, counters, names, position = [], [], [], 0
        for path, node in nodes:
            node_name = path_name(path) or "state"
            leaves = jax.tree.leaves(node)
            params_like = is_params_like is not None and is_params_like(node) or (
                is_params_like is None and len(leaves) == 1 and np.ndim(leaves[0]) >= len(shapes[0])
                and tuple(np.shape(leaves[0])[:len(shapes[0])]) == shapes[0])
            for j, leaf in enumerate(leaves):
                dtype = jnp.result_type(leaf)
                shape = tuple(np.shape(leaf))
                if jnp.issubdtype(dtype, jnp.integer):
                    counters.append(position)
                elif jnp.issubdtype(dtype, jnp.floating) and params_like and shape[:len(shapes[j])] == shapes[j]:
                    width = math.prod(shape[len(shapes[j]):])
                    slots.append(_Slot(position, node_name, j, width))
                elif jnp.issubdtype(dtype, jnp.floating) and total > 1 and len(shape) >= 1 and shape[0] == total:
                    slots.append(_Slot(position, node_name, None, math.prod(shape[1:])))
                position += 1
        for slot in slots:
            if slot.param_leaf in (None, 0):
                names.extend([slot.name] if slot.width == 1 else [f"{slot.name}[{k}]" for k in range(slot.width)])
        return cls(treedef, tuple(slots), tuple(counters), shapes, tuple(names))

    @property
    def width(self) -> int:
        """Number of state values per coordinate."""
        return len(self.slot_names)

    def _offset(self, leaf: int) -> int:
        return sum(math.prod(s) for s in self.param_shapes[:leaf])

    def _slots_of(self, leaf: int) -> list[_Slot]:
        return [s for s in self.slots if s.param_leaf in (None, leaf)]

    def get(self, state: Any, leaf: int, coordinate: jax.Array) -> jax.Array:
        """The ``[width]`` state values of coordinate ``coordinate`` (flat index) of params leaf ``leaf``."""
        flat = jax.tree.leaves(state)
        parts = []
        for slot in self._slots_of(leaf):
            x = flat[slot.index]
            row = coordinate if slot.param_leaf is not None else self._offset(leaf) + coordinate
            parts.append(x.reshape(-1, slot.width)[row].astype(jnp.float32))
        return jnp.concatenate(parts) if parts else jnp.zeros((0,), jnp.float32)

    def set(self, state: Any, leaf: int, coordinate: jax.Array, values: jax.Array) -> Any:
        """``state`` with coordinate ``coordinate`` of params leaf ``leaf`` set to ``values`` ``[width]``."""
        flat = list(jax.tree.leaves(state))
        start = 0
        for slot in self._slots_of(leaf):
            x = flat[slot.index]
            row = coordinate if slot.param_leaf is not None else self._offset(leaf) + coordinate
            new = x.reshape(-1, slot.width).at[row].set(values[start:start + slot.width].astype(x.dtype))
            flat[slot.index] = new.reshape(x.shape)
            start += slot.width
        return jax.tree.unflatten(self.treedef, flat)

    def scale_slot(self, state: Any, name: str, factor: jax.Array) -> Any:
        """``state`` with every per-coordinate value of slot ``name`` (e.g. ``"0/nu"``) times ``factor``."""
        base, _, k = name.partition("[")
        flat = list(jax.tree.leaves(state))
        for slot in self.slots:
            if slot.name != base:
                continue
            x = flat[slot.index]
            if k:
                index = int(k.rstrip("]"))
                x2 = x.reshape(-1, slot.width)
                flat[slot.index] = x2.at[:, index].multiply(factor).reshape(x.shape).astype(x.dtype)
            else:
                flat[slot.index] = (x * factor).astype(x.dtype)
        return jax.tree.unflatten(self.treedef, flat)

    def set_counters(self, state: Any, step: jax.Array) -> Any:
        """``state`` with every integer leaf (step counter) set to ``step``."""
        flat = list(jax.tree.leaves(state))
        for index in self.counters:
            flat[index] = jnp.full_like(flat[index], step)
        return jax.tree.unflatten(self.treedef, flat)

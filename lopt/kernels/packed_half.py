"""Packed float16 arithmetic for the small per-parameter networks inside the fused steps.

The ``nominal`` step (and so the pretrained optimizer's) evaluates its 7-8-8-2 network as
unrolled multiply-adds, about 200 per parameter with the anchored direction: half the
instructions of its main pass. A GPU's ``fma.rn.f16x2`` does two float16 multiply-adds in one
instruction, so with ``KernelConfig(network="float16")`` each thread evaluates the network for two
parameters at once: :func:`fma` packs two neighbouring entries of a block (``pack=2`` of
:func:`jax.experimental.pallas.triton.elementwise_inline_asm`) and multiplies both by the same
weight, an immediate operand when the weights are compiled in. Letting the compiler pack float16
code itself pairs weights of one parameter instead and spends as many permutes as it saves.

float16 keeps 11 significant bits (relative rounding ``2**-11``) up to 65,504: the network's inputs
are clipped to ``input_clip`` (10) before, and its weights and activations are of order 1 to 100.
On the CPU (Pallas interpret mode, no PTX) :func:`fma` computes ``x * w + acc`` in float32 and rounds
it to float16: the product of two float16 values is exact in float32, so the result can differ from
the GPU's single rounding only where the float32 sum itself rounded (one float16 unit, rarely).

Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.array([1.5, -2.0, 0.25, 3.0], jnp.float16)
    >>> acc = broadcast(0.5, x.shape)
    >>> fma(x, 2.0, acc, packed=False).tolist()
    [3.5, -3.5, 1.0, 6.5]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental.pallas import triton as plgpu

__all__ = ["broadcast", "fma"]

_f16 = jnp.float16


def broadcast(value: Any, shape: tuple[int, ...]) -> jax.Array:
    """``value`` (a Python float, a scalar or an array of ``shape``) as a float16 array of ``shape``.

    Example:
        >>> broadcast(0.1, (2,)).dtype, broadcast(jnp.ones(3), (3,)).tolist()
        (dtype('float16'), [1.0, 1.0, 1.0])
    """
    return jnp.broadcast_to(jnp.asarray(value).astype(_f16), shape)


def fma(x: jax.Array, w: Any, acc: jax.Array, *, packed: bool, relu: bool = False) -> jax.Array:
    """``x * w + acc`` in float16, rounded once (``x``, ``acc``: float16 arrays of one shape; ``w``: a
    weight shared by all entries, a Python float or a scalar); with ``relu``, negative results are 0.

    ``packed`` (the GPU): one ``fma.rn.f16x2`` per two entries (``fma.rn.relu.f16x2`` with ``relu``: a
    hidden unit's last multiply-add is also its ReLU, no packed max of its own; sm_80 and later).
    Otherwise (interpret mode) float32 arithmetic rounded to float16, as the module docstring says,
    then the ReLU.

    Example:
        >>> x = jnp.array([1.0, 2.0], jnp.float16)
        >>> fma(x, 0.5, jnp.zeros(2, jnp.float16), packed=False).tolist()
        [0.5, 1.0]
        >>> fma(x, -0.5, jnp.full(2, 0.75, jnp.float16), packed=False, relu=True).tolist()
        [0.25, 0.0]
    """
    w = broadcast(w, x.shape)
    if not packed:
        out = (x.astype(jnp.float32) * w.astype(jnp.float32) + acc.astype(jnp.float32)).astype(_f16)
        return jnp.maximum(out, _f16(0)) if relu else out
    (out,) = plgpu.elementwise_inline_asm(
        f"fma.rn{'.relu' if relu else ''}.f16x2 $0, $1, $2, $3;", args=[x, w, acc], constraints="=r,r,r,r",
        pack=2, result_shape_dtypes=[jax.ShapeDtypeStruct(x.shape, _f16)])
    return out

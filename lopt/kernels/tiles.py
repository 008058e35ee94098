"""Shared pieces of the fused Pallas steps: tile loads with bounds masks, launch, gradients.

Every kernel here walks a flattened tensor of ``n`` parameters in blocks of ``block``
rows, by default one program per block; a persistent kernel (``KernelConfig.programs``)
launches a fixed number of programs that each loop over several blocks and passes the
block it is at (``index``) to the helpers below. Refs are whole arrays (no ``BlockSpec``):
each program indexes its rows with ``pl.ds`` and masks the tail itself, because the Triton lowering
neither masks blocks that overhang an array nor accepts block shapes whose size is not a
power of two (an accumulator of ``k`` decays is read as a ``[block, width]`` tile with
``width`` a power of two and the columns ``>= k`` masked off).

Example:
    >>> from lopt.kernels.tiles import KernelConfig
    >>> KernelConfig().block
    256
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

__all__ = ["PRECISIONS", "KernelConfig", "block_size", "call", "dot", "interleaved", "load_rows", "load_tile",
           "per_row", "row_ids", "store_rows", "store_tile", "with_reference_vjp"]

_PRECISIONS = {
    "tf32": jax.lax.DotAlgorithmPreset.TF32_TF32_F32,
    "tf32x3": jax.lax.DotAlgorithmPreset.TF32_TF32_F32_X3,
    "ieee": jax.lax.DotAlgorithmPreset.F32_F32_F32,
    "bf16": jax.lax.DotAlgorithmPreset.BF16_BF16_F32,
}
PRECISIONS = tuple(sorted(_PRECISIONS))  # the names KernelConfig.precision accepts


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Launch settings of a fused step (static: they decide what compiles).

    Attributes:
        block: parameters (rows) per program of the main pass; a power of two.
        reduce_block: rows per program of the reduction pass; a power of two.
        num_warps: warps per program on GPU.
        num_stages: software-pipelining depth on GPU (``None``: Triton's default).
        precision: tensor-core precision of in-kernel matrix products on GPU, one of
            ``tf32`` (what XLA uses for float32 products by default on GPU), ``tf32x3``
            (about float32 accuracy), ``ieee``, ``bf16``. Interpret mode always
            computes in float32.
        programs: ``None``: one program per block of the main pass. An int ``P``: a
            persistent main pass of ``P`` programs, program ``pid`` taking blocks ``pid``,
            ``pid + P``, ... and loading each next block while it computes the current one
            (only kernels written for it accept it: the main passes of ``nominal`` and ``mlp``). On a
            GPU, a small multiple of the SM count (132 on an H100: 1056, 2112).
        statistics: how the ``nominal`` step computes its per-tensor statistics before the main
            pass: ``"kernel"``, one Pallas pass reading ``g`` and ``p`` once
            (:mod:`lopt.kernels.factored_stats`, where it applies), or ``"xla"``, three XLA
            reductions reading ``g`` twice and ``p`` once.
        anchor: how the ``nominal`` step's anchored direction is computed in its main pass:
            ``"network"``, a second pass of the network, or ``"table"``, looked up from its
            linear pieces (:mod:`lopt.kernels.anchor_table`: 40 fewer instructions per
            parameter, but 1.4% slower on an H100 in stop 55, so not the default).
        network: how the ``nominal`` step (the pretrained optimizer's) evaluates its network:
            ``"float32"`` multiply-adds, or ``"float16"``, two parameters per ``fma.rn.f16x2``
            instruction (:mod:`lopt.kernels.packed_half`): 28% fewer instructions in the folded
            pretrained step (402 -> 288 per parameter, static count), at float16's rounding.
        reduction: how the ``mlp`` step launches each tensor's reduction pass over a pytree:
            ``"separate"``, a kernel of its own before the tensor's main pass, or
            ``"overlapped"``, inside the launch of the previous tensor's main pass, its programs
            interleaved with the main pass's (:func:`interleaved`), so that its memory traffic
            runs beside the main pass's arithmetic instead of after it (one launch per tensor
            plus one; the first tensor's reduction runs alone).

    Example:
        >>> KernelConfig(block=128, programs=1056).programs
        1056
        >>> KernelConfig(programs=0)
        Traceback (most recent call last):
        ...
        ValueError: KernelConfig: programs=0 must be a positive int, or None for one program per block.
    """

    block: int = 256
    reduce_block: int = 1024
    num_warps: int = 4
    num_stages: int | None = None
    precision: str = "tf32"
    programs: int | None = None
    statistics: str = "kernel"
    anchor: str = "network"
    reduction: str = "separate"
    network: str = "float32"

    def __post_init__(self) -> None:
        for name in ("block", "reduce_block"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 16 or (
                    value & (value - 1)):
                raise ValueError(f"KernelConfig: {name}={value!r} must be a power of two >= 16.")
        if self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"KernelConfig: num_warps={self.num_warps!r} must be 1, 2, 4, 8 or 16.")
        if self.precision not in _PRECISIONS:
            raise ValueError(f"KernelConfig: precision={self.precision!r} must be one of "
                             f"{sorted(_PRECISIONS)}.")
        if self.statistics not in ("kernel", "xla"):
            raise ValueError(f"KernelConfig: statistics={self.statistics!r} must be 'kernel' or 'xla'.")
        if self.anchor not in ("table", "network"):
            raise ValueError(f"KernelConfig: anchor={self.anchor!r} must be 'table' or 'network'.")
        if self.network not in ("float32", "float16"):
            raise ValueError(f"KernelConfig: network={self.network!r} must be 'float32' or 'float16'.")
        if self.reduction not in ("separate", "overlapped"):
            raise ValueError(f"KernelConfig: reduction={self.reduction!r} must be 'separate' or 'overlapped'.")
        p = self.programs
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or p < 1):
            raise ValueError(f"KernelConfig: programs={p!r} must be a positive int, or None for one "
                             "program per block.")
        if p is not None and self.reduction == "overlapped":
            raise ValueError(f"KernelConfig: reduction='overlapped' interleaves the reduction's programs "
                             f"with one program per main pass block; it cannot take programs={p!r} "
                             "(a persistent main pass): pass programs=None or reduction='separate'.")


def block_size(n: int, minimum: int = 16) -> int:
    """The smallest power of two >= ``n`` and >= ``minimum``: a block dimension covering ``n``
    entries (the Triton lowering takes only power-of-two blocks; the excess is masked off).

    Example:
        >>> block_size(3), block_size(16), block_size(100), block_size(8, minimum=8)
        (16, 16, 128, 8)
    """
    return max(minimum, 1 << max(0, n - 1).bit_length())


def _start(block: int, index: Any) -> jax.Array:
    """First row of block ``index`` (``None``: this program's block, ``pl.program_id(0)``)."""
    return (pl.program_id(0) if index is None else index) * block


def row_ids(block: int, width: int | None = None, *, index: Any = None) -> jax.Array:
    """Global row index of each row of a block (``[block]`` or ``[block, width]``).

    ``index``: the block (a traced int); ``None``: this program's, ``pl.program_id(0)``.
    """
    shape = (block,) if width is None else (block, width)
    return _start(block, index) + jax.lax.broadcasted_iota(jnp.int32, shape, 0)


def _rows_view(ref: Any, block: int, col: int | None, index: Any) -> Any:
    rows = pl.ds(_start(block, index), block)
    return ref.at[rows] if col is None else ref.at[rows, jnp.int32(col)]


def load_rows(ref: Any, n: int, block: int, col: int | None = None, *, index: Any = None) -> jax.Array:
    """A block's ``[block]`` rows of a 1-D ref (or column ``col`` of a 2-D ref) as float32.

    Rows ``>= n`` read as 0 (a block wholly past the end reads as zeros). ``index``: as in
    :func:`row_ids`.
    """
    x = plgpu.load(_rows_view(ref, block, col, index), mask=row_ids(block, index=index) < n, other=0)
    return x.astype(jnp.float32)


def store_rows(ref: Any, value: jax.Array, n: int, block: int, col: int | None = None, *,
               index: Any = None) -> None:
    """Writes ``value`` (cast to the ref's dtype) to a block's rows ``< n`` (of ``col``)."""
    plgpu.store(_rows_view(ref, block, col, index), value.astype(ref.dtype),
                mask=row_ids(block, index=index) < n)


def per_row(ref: Any, block: int) -> jax.Array:
    """A one-element ref's value as a ``[block]`` vector, loaded once per row (the same address).

    What a kernel computes from it then stays in the 1-D layout of a block's rows (two rows per
    thread in two-warp programs of 128), where Triton, given a scalar, recomputes row values in
    the layout of the 2-D tile they meet, in every lane that holds part of a row (four for an
    8-column tile, eight for the products' outputs), and converts only the result: a load is not
    rematerialised. ``mlp``'s main pass: 488 -> 440 instructions per parameter (bf16 products and
    momenta, 128 x 2, static count, stop 63).

    Example:
        >>> import jax.numpy as jnp
        >>> per_row(jnp.array([2.5]), 3).tolist()
        [2.5, 2.5, 2.5]
    """
    return ref[jnp.zeros((block,), jnp.int32)]


def _tile_mask(n: int, k: int, block: int, width: int, index: Any) -> jax.Array:
    cols = jax.lax.broadcasted_iota(jnp.int32, (block, width), 1)
    return (row_ids(block, width, index=index) < n) & (cols < k)


def load_tile(ref: Any, n: int, k: int, block: int, width: int, *, index: Any = None) -> jax.Array:
    """A block's rows of an ``[n, k]`` ref as a ``[block, width]`` float32 tile (pad 0)."""
    view = ref.at[pl.ds(_start(block, index), block), pl.ds(0, width)]
    return plgpu.load(view, mask=_tile_mask(n, k, block, width, index), other=0).astype(jnp.float32)


def store_tile(ref: Any, value: jax.Array, n: int, k: int, block: int, *, index: Any = None) -> None:
    """Writes the first ``k`` columns of a ``[block, width]`` tile to a block's rows."""
    width = value.shape[1]
    view = ref.at[pl.ds(_start(block, index), block), pl.ds(0, width)]
    plgpu.store(view, value.astype(ref.dtype), mask=_tile_mask(n, k, block, width, index))


def finite_or(new: jax.Array, old: Any, *, ptx: bool = False) -> jax.Array:
    """``new`` where it is finite, else ``old``: :func:`lopt.learned.mask_non_finite` inside a
    kernel (``abs(x) < inf`` is false for NaN and both infinities, and lowers everywhere).

    ``ptx`` (the GPU only): the test and the select as inline PTX (``abs``, ``setp.lt``, ``selp``),
    which ptxas turns into one compare on ``|x|`` and a select per entry. The same test written with
    jnp lowers to an ``abs`` that ptxas keeps as an instruction of its own (``FADD.FTZ |x|``) before
    the compare: one instruction more per entry (``mlp`` with bf16 products at 128 x 2: 436 -> 424 per
    parameter, static count, stop 64). ``old`` is then an array of ``new``'s shape or a Python number.

    Example:
        >>> import jax.numpy as jnp
        >>> finite_or(jnp.array([1.0, jnp.nan, -jnp.inf]), 0.0).tolist()
        [1.0, 0.0, 0.0]
    """
    if not ptx:
        return jnp.where(jnp.abs(new) < jnp.inf, new, old)
    test = "{ .reg .pred f; .reg .f32 a; abs.f32 a, $1; setp.lt.f32 f, a, 0f7F800000; selp.f32 $0, $1, %s, f; }"
    if isinstance(old, (int, float)):  # an immediate: PTX writes a float32 as 0f and its 8 hex digits
        fallback, args = f"0f{int(np.float32(old).view(np.uint32)):08X}", [new]
    else:
        fallback, args = "$2", [new, old]
    (out,) = plgpu.elementwise_inline_asm(
        test % fallback, args=[a.astype(jnp.float32) for a in args], constraints=",".join(["=f"] + ["f"] * len(args)),
        pack=1, result_shape_dtypes=[jax.ShapeDtypeStruct(new.shape, jnp.float32)])
    return out


#: The narrowest contraction :func:`dot` runs in bfloat16: Hopper's bf16 tensor-core products take K
#: in steps of 16, and an 8-wide one (``mlp``'s first product) came out wrong on an H100 (stop 59:
#: updates 1.77x too large, 82% error), so narrower products run at the default precision (TF32).
BF16_MIN_K = 16


def dot(a: jax.Array, b: jax.Array, precision: str | None) -> jax.Array:
    """``a @ b`` accumulated in float32 inside a kernel (``precision=None``: plain float32).

    ``"bf16"`` rounds both operands to bfloat16 explicitly, so interpret mode on the CPU (which
    ignores a product's precision) computes what the GPU's tensor cores do; a contraction narrower
    than :data:`BF16_MIN_K` runs as ``precision=None`` instead (TF32 on the GPU, float32 on the
    CPU). The other precisions name the GPU's algorithm.

    Example:
        >>> a, b = jnp.full((1, 16), 1.0 + 2.0**-10), jnp.ones((16, 1))
        >>> float(dot(a, b, None)[0, 0]) - 16.0, float(dot(a, b, "bf16")[0, 0]) - 16.0
        (0.015625, 0.0)
        >>> float(dot(a[:, :8], b[:8], "bf16")[0, 0]) - 8.0  # K = 8: TF32 (float32 on the CPU)
        0.0078125
    """
    if precision == "bf16" and a.shape[-1] < BF16_MIN_K:
        precision = None  # the default product (TF32 on the GPU): bf16 ones need K >= 16 (BF16_MIN_K)
    if precision == "bf16":
        return jnp.dot(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32)
    algorithm = None if precision is None else _PRECISIONS[precision]
    return jnp.dot(a, b, precision=algorithm, preferred_element_type=jnp.float32)


def program_count(rows: int, block: int, cfg: KernelConfig) -> int:
    """Programs :func:`call` launches over ``rows`` rows in blocks of ``block``: one per block, or
    ``cfg.programs`` (a persistent kernel). Outputs written once per program have this length.

    Example:
        >>> program_count(1000, 128, KernelConfig()), program_count(1000, 128, KernelConfig(programs=3))
        (8, 3)
    """
    return -(-rows // block) if cfg.programs is None else cfg.programs


def interleaved(pid: Any, first: int, second: int) -> tuple[jax.Array, jax.Array]:
    """``(is_second, index)`` of program ``pid`` of ``first + second`` programs that share one launch
    between two kinds of blocks, spread evenly over the program ids.

    The kind with more blocks (the major one) takes ``ratio = major // minor`` programs of each
    period of ``ratio + 1``, the minor kind the last; the major kind's remaining blocks follow the
    periods. Programs start roughly in id order, so both kinds run side by side through the launch.
    ``index`` is the block within its kind. Both counts must be positive.

    Example:
        >>> import numpy as np
        >>> is_second, index = interleaved(np.arange(7), 5, 2)
        >>> is_second.astype(int).tolist(), index.tolist()
        ([0, 0, 1, 0, 0, 1, 0], [0, 1, 0, 2, 3, 1, 4])
    """
    if first < 1 or second < 1:
        raise ValueError(f"interleaved: both block counts must be positive, got {first} and {second}.")
    swap = second > first
    major, minor = (second, first) if swap else (first, second)
    ratio = major // minor
    period = ratio + 1
    cycle, phase = pid // period, pid % period
    in_periods = pid < period * minor
    is_minor = in_periods & (phase == ratio)
    major_index = jnp.where(in_periods, cycle * ratio + phase, minor * ratio + (pid - period * minor))
    index = jnp.where(is_minor, cycle, major_index)
    return (~is_minor if swap else is_minor), index


def call(
    kernel: Callable[..., None],
    out_shape: Sequence[jax.ShapeDtypeStruct],
    *,
    rows: int,
    block: int,
    cfg: KernelConfig,
    interpret: bool,
    aliases: dict[int, int] | None = None,
    name: str,
    persistent: bool = False,
    programs: int | None = None,
) -> Callable[..., Any]:
    """``pallas_call`` over ``ceil(rows / block)`` programs, on Triton or in interpret mode.

    With ``cfg.programs`` set, over that many programs instead; the kernel must then loop over
    its blocks itself (``persistent=True`` says it does; else ``cfg.programs`` is refused).
    ``programs``: launch exactly that many (a kernel that maps program ids to its blocks itself,
    e.g. by :func:`interleaved`); ``rows`` and ``block`` are then ignored.
    """
    if cfg.programs is not None and not persistent:
        raise ValueError(f"KernelConfig(programs={cfg.programs!r}): kernel {name!r} has no "
                         "persistent variant; use programs=None.")
    params = None if interpret else plgpu.CompilerParams(num_warps=cfg.num_warps,
                                                         num_stages=cfg.num_stages)
    return pl.pallas_call(
        kernel,
        out_shape=tuple(out_shape),
        grid=(program_count(rows, block, cfg) if programs is None else programs,),
        input_output_aliases=aliases or {},
        interpret=interpret,
        compiler_params=params,
        name=name,
    )


def with_reference_vjp(fused: Callable[..., Any], reference: Callable[..., Any]) -> Callable[..., Any]:
    """``fused`` in the forward pass; gradients from ``reference`` (the XLA path) by ``jax.vjp``.

    Both take the same positional array arguments (pytrees allowed) and return the same
    outputs. Reverse mode (``jax.grad``, TBPTT) recomputes the forward in XLA for the
    residuals, so a differentiated step costs the kernel plus the XLA forward and backward.
    """

    @jax.custom_vjp
    def step(*args):
        return fused(*args)

    def fwd(*args):
        return fused(*args), args

    def bwd(args, cotangent):
        _, vjp = jax.vjp(reference, *args)
        return vjp(cotangent)

    step.defvjp(fwd, bwd)
    return step

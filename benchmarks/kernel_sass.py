"""What the fused steps compile to on an NVIDIA GPU, measured without one: registers, spills,
occupancy and the machine instructions per parameter of every launch config.

Device time is scarce and each launch config of a fused step takes 16-26 s to compile on the
GPU (``kernel_step.py --sweep``), so this benchmark answers the static half of the question on
any machine: it lowers each kernel for CUDA (``lowering_platforms=("cuda",)``, no GPU needed),
takes the Triton module Pallas builds, runs the Triton-IR passes XLA's GPU pipeline starts with
(canonicalisation, op combining, CSE: ``triton.compile`` skips them for IR text; until stop 62 the counts
included each bias add that the GPU folds into its product), compiles it with the ``triton`` package's compiler and
``ptxas`` for the target (``sm_90``: H100 and H200), and reads the cubin with ``cuobjdump``:

* registers per thread and spill bytes (``STACK``/``LOCAL``), shared memory;
* the resident warps per SM those allow (of 64; the SM's 65,536 registers, 228 KB of shared
  memory and 32 programs bound it), i.e. how much memory latency the SM can hide;
* the static SASS instruction count per parameter (the kernels are straight-line code, so it is
  also the count each thread executes) and its mix: global loads (``LDG``), fused multiply-adds,
  min/max (the clips), and so on.
  A persistent kernel (``BLOCKxWARPSpPROGRAMS``) is a loop: its static count is the loop body
  once plus the prologue that loads the first block, divided by the block, so it slightly
  overstates the instructions per parameter the loop executes.

``pretrained_bf16`` and ``mlp_bf16`` keep the state in bfloat16 (``state_dtype``).
For ``nominal`` and the pretrained optimizer both ways of getting the network's weights are
compiled: loaded by every program from the packed scalars (a traced theta: meta-training) and
folded into the code as immediates (a fixed theta: deployment; :func:`lopt.kernels.nominal_step.folded_weights`).

The compiler here is the ``triton`` package's, not the one inside the GPU machine's jaxlib (XLA
compiles Pallas' Triton module itself there), so the figures describe the same program through a
close but not identical compiler: use them to compare variants, and time the winners on a GPU
(``kernel_step.py``).

Needs ``pip install "lopt[kernel-analysis]"`` (the ``triton`` wheel bundles ``ptxas`` and
``cuobjdump``).

Usage:
    python benchmarks/kernel_sass.py [--archs pretrained nominal mlp] [--configs 128x4 256x4]
        [--precision bf16] [--reduce-block 256] [--reduction overlapped] [--network float16] [--out FILE]

``--reduction overlapped`` compiles ``mlp`` over two tensors, so that the first tensor's main pass
launch holds the second's reduction (``lopt_mlp_step_and_reduce``); ``--network float16`` compiles the
nominal and pretrained steps with their network in packed float16 (``KernelConfig.network``).

Writes ``benchmarks/results/kernel_sass_sm<cc>.json`` without ``--out``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(__file__))
from common import refuse_existing_out, save

from lopt.kernels import factored_stats

HORIZON = 10_000
SHAPE = (1024, 1024)  # the lowered tensor: its size only enters the kernels' index arithmetic
DEFAULT_CONFIGS = ["128x2", "128x4", "256x2", "256x4", "256x8", "512x4", "1024x4"]
# sm_90 (H100, H200) limits per SM
_REGISTERS_PER_SM = 65_536
_MAX_WARPS_PER_SM = 64
_MAX_PROGRAMS_PER_SM = 32
_SHARED_PER_SM = 228 * 1024
_SHARED_RESERVED_PER_PROGRAM = 1024
_REGISTER_UNIT = 256  # registers are allocated per warp in units of 256
_SASS_LINE = re.compile(r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)")
_RESOURCE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")


def parse_config(text: str) -> tuple[int, int, int | None]:
    """``"256x4"`` -> ``(256, 4, None)``: parameters per program (per loop iteration of a
    persistent kernel), warps, and the persistent kernel's programs (``"128x4p1056"``;
    ``KernelConfig.programs``).

    Example:
        >>> parse_config("256x4"), parse_config("128x4p1056")
        ((256, 4, None), (128, 4, 1056))
    """
    match = re.fullmatch(r"(\d+)x(\d+)(?:p(\d+))?", text)
    if not match:
        raise ValueError(f"kernel_sass: config {text!r} must read BLOCKxWARPS or BLOCKxWARPSpPROGRAMS, "
                         "for example 256x4 or 128x4p1056.")
    return int(match.group(1)), int(match.group(2)), None if match.group(3) is None else int(match.group(3))


def occupancy_warps(registers: int, warps: int, shared_bytes: int = 0) -> int:
    """Warps of one kernel resident on an sm_90 SM, from its registers, warps and shared memory.

    Example:
        >>> occupancy_warps(32, 4), occupancy_warps(72, 4), occupancy_warps(168, 4)
        (64, 28, 12)
    """
    per_warp = -(-registers * 32 // _REGISTER_UNIT) * _REGISTER_UNIT
    by_registers = _REGISTERS_PER_SM // (per_warp * warps)
    by_shared = _SHARED_PER_SM // (shared_bytes + _SHARED_RESERVED_PER_PROGRAM)
    programs = min(by_registers, by_shared, _MAX_PROGRAMS_PER_SM, _MAX_WARPS_PER_SM // warps)
    return programs * warps


def opcode_counts(sass: str) -> collections.Counter:
    """Instructions of a ``cuobjdump -sass`` listing by opcode (modifiers dropped).

    Example:
        >>> text = '''        /*0010*/                   LDG.E R2, desc[UR4][R2.64] ;
        ...         /*0020*/              @!P0 FFMA R5, R0, 0.5, R5 ;
        ...         /*0030*/                   FFMA R6, R3, R4, R6 ;'''
        >>> sorted(opcode_counts(text).items())
        [('FFMA', 2), ('LDG', 1)]
    """
    return collections.Counter(m.group(1) for line in sass.splitlines() if (m := _SASS_LINE.match(line)))


def resource_usage(text: str) -> dict[str, int]:
    """Registers, stack, shared and local bytes from ``cuobjdump --dump-resource-usage``.

    Example:
        >>> resource_usage(" Function k:\\n  REG:40 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:664")
        {'registers': 40, 'stack_bytes': 0, 'shared_bytes': 1024, 'local_bytes': 0}
    """
    match = _RESOURCE.search(text)
    if match is None:
        raise ValueError(f"kernel_sass: no resource line in cuobjdump's output: {text[:300]!r}")
    keys = ("registers", "stack_bytes", "shared_bytes", "local_bytes")
    return dict(zip(keys, map(int, match.groups())))


@contextlib.contextmanager
def captured_triton_modules() -> Iterator[list[tuple[str, str]]]:
    """Collects ``(name, Triton IR text)`` of every Pallas kernel lowered for a GPU in the block.

    It wraps Pallas' (private) Triton lowering function, so a JAX release that renames it fails
    here with a clear message rather than silently capturing nothing.
    """
    try:
        from jax._src.pallas.triton import pallas_call_registration as registration
        original = registration.lowering.lower_jaxpr_to_triton_module
    except (ImportError, AttributeError) as e:
        raise RuntimeError(f"kernel_sass: this JAX ({jax.__version__}) lowers Pallas to Triton "
                           "differently; the capture needs updating.") from e
    modules: list[tuple[str, str]] = []

    def capture(*args, **kwargs):
        result = original(*args, **kwargs)
        op = result.module.operation
        modules.append((str(op.attributes["sym_name"]).strip('"'), op.get_asm(enable_debug_info=False)))
        return result

    registration.lowering.lower_jaxpr_to_triton_module = capture
    try:
        yield modules
    finally:
        registration.lowering.lower_jaxpr_to_triton_module = original


def triton_modules(step: Callable, *args) -> list[tuple[str, str]]:
    """The Triton modules of every Pallas kernel in ``jit(step)(*args)``, lowered for CUDA."""
    with captured_triton_modules() as modules:
        jax.jit(step).trace(*args).lower(lowering_platforms=("cuda",))
    if not modules:
        raise RuntimeError("kernel_sass: the step lowered no Pallas kernel (is the kernel path on?)")
    return modules


def _tool(name: str) -> str:
    from triton.backends import nvidia
    path = os.path.join(os.path.dirname(nvidia.__file__), "bin", name)
    if not os.path.exists(path):
        raise RuntimeError(f"kernel_sass: the triton package has no {name} at {path}.")
    return path


def _ttir_passes(ttir: str, folder: str, warps: int, stages: int, capability: int) -> str:
    """``ttir`` after the Triton-IR passes (canonicalisation, op combining, CSE) that the GPU's
    pipeline runs first (XLA's ``MakeTTIR``, after Triton's ``make_ttir``). ``triton.compile`` skips
    them for a source given as IR, which left e.g. each layer's bias add outside its product."""
    from triton._C.libtriton import ir
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend

    backend = make_backend(GPUTarget("cuda", capability, 32))
    context = ir.context()
    ir.load_dialects(context)
    backend.load_dialects(context)
    source = os.path.join(folder, "frontend.ttir")
    with open(source, "w", encoding="utf-8") as f:
        f.write(ttir)
    module = ir.parse_mlir_module(source, context)
    module.context = context
    options = backend.parse_options({"num_warps": warps, "num_stages": stages})
    return str(backend.make_ttir(module, {}, options, capability))


def compile_module(ttir: str, warps: int, stages: int, capability: int) -> dict:
    """Compiles Triton IR text to a cubin (through the Triton-IR passes the GPU runs,
    :func:`_ttir_passes`); registers, spills, occupancy and opcode counts."""
    import triton
    from triton.backends.compiler import GPUTarget

    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # XLA's Triton fuses multiply-adds
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "kernel.ttir")
        with open(source, "w", encoding="utf-8") as f:
            f.write(_ttir_passes(ttir, folder, warps, stages, capability))
        kernel = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                                options={"num_warps": warps, "num_stages": stages})
        cubin = os.path.join(folder, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(kernel.asm["cubin"])
        usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", cubin], check=True,
                               capture_output=True, text=True).stdout
        sass = subprocess.run([_tool("cuobjdump"), "-sass", cubin], check=True, capture_output=True,
                              text=True).stdout
    row = resource_usage(usage)
    counts = opcode_counts(sass)
    row.update(instructions=sum(counts.values()), opcodes=dict(counts.most_common()),
               occupancy_warps=occupancy_warps(row["registers"], warps, row["shared_bytes"]))
    return row


def steps(arch: str, block: int, warps: int, programs: int | None = None,
          precision: str = "tf32", reduce_block: int = 1024,
          reduction: str = "separate", network: str = "float32") -> dict[str, tuple[Callable, tuple]]:
    """``{variant: (step, args)}`` of the architecture's fused step writing params (``apply=True``;
    ``reduction="overlapped"``: ``mlp``'s over two tensors, so that its main pass launch runs the
    second's reduction)."""
    import lopt.learned
    import lopt.pretrained
    from lopt.kernels import mlp_step, nominal_step, tiles
    from lopt.learned import features as F

    cfg = tiles.KernelConfig(block, reduce_block, warps, programs=programs, precision=precision,
                             reduction=reduction, network=network)
    params = {"w": jnp.ones(SHAPE, jnp.float32)}
    if reduction == "overlapped":
        params["v"] = jnp.ones(SHAPE, jnp.float32)
    if arch.startswith("mlp"):
        lo = lopt.learned.get("mlp", state_dtype="bfloat16" if arch == "mlp_bf16" else "float32")
        theta = lo.init(jax.random.key(0))
        state = lo.optimizer(theta, num_steps=HORIZON).init(params)

        def mlp(grads, momentum, p):
            context = F.tanh_time_embedding(jnp.int32(1), lo.time_scales)
            return mlp_step.mlp_update(lo, theta["mlp"], context, grads, momentum, p, interpret=False,
                                       apply=True, cfg=cfg, step=jnp.int32(1))
        return {"loaded": (mlp, (params, state.momentum, params))}
    theta, lo = lopt.pretrained.load() if arch.startswith("pretrained") else (None, lopt.learned.get(arch))
    if arch == "pretrained_bf16":  # its state stored in bfloat16, rounded stochastically
        lo = lo.with_execution_options(state_dtype="bfloat16")
    theta = lo.init(jax.random.key(0)) if theta is None else theta
    state = lo.optimizer(theta, num_steps=HORIZON).init(params)
    out = {}
    for variant, fold in (("loaded", False), ("folded", True)):
        def nominal(grads, st, p, fold=fold):  # theta closed over: concrete, so foldable
            return nominal_step.nominal_update(lo, theta, HORIZON, grads, st, p, interpret=False,
                                               apply=True, cfg=cfg, fold_weights=fold)
        out[variant] = (nominal, (params, state, params))
    return out


def analyse(arch: str, config: str, *, stages: int, capability: int, precision: str = "tf32",
            reduce_block: int = 1024, reduction: str = "separate", network: str = "float32") -> list[dict]:
    """One row per kernel of each variant of ``arch`` at launch ``config`` (``precision``,
    ``reduce_block``, ``reduction``, ``network``: as :class:`lopt.kernels.tiles.KernelConfig`'s).

    ``lopt_mlp_step_and_reduce`` (``reduction="overlapped"``) holds both passes' code, one branch
    per program: its count per parameter is both branches' instructions over the main pass's block,
    more than either kind of program executes."""
    block, warps, programs = parse_config(config)
    rows = []
    for variant, (step, args) in steps(arch, block, warps, programs, precision, reduce_block, reduction,
                                       network).items():
        for name, ttir in triton_modules(step, *args):
            row = {"arch": arch, "variant": variant, "kernel": name, "block": block, "warps": warps,
                   "precision": precision}
            row.update(compile_module(ttir, warps, stages, capability))
            # the reduction kernel of mlp walks its own block (KernelConfig.reduce_block), the
            # nominal step's statistics kernel a tile of about 4,096 entries
            rows_per_program = (reduce_block if name == "lopt_mlp_reduce" else math.prod(
                factored_stats.tile_shape(*SHAPE)) if "factored_stats" in name else block)
            row["params_per_thread"] = rows_per_program / (32 * warps)
            row["instructions_per_param"] = row["instructions"] * 32 * warps / rows_per_program
            row["loads_per_param"] = row["opcodes"].get("LDG", 0) * 32 * warps / rows_per_program
            rows.append(row)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", nargs="+", default=["pretrained", "nominal", "mlp"],
                        choices=["mlp", "mlp_bf16", "nominal", "pretrained", "pretrained_bf16"])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="BLOCKxWARPS launch configs")
    parser.add_argument("--stages", type=int, default=3, help="num_stages (XLA's Triton default is 3)")
    parser.add_argument("--capability", type=int, default=90, help="compute capability (90: H100, H200)")
    parser.add_argument("--precision", default="tf32", choices=["tf32", "tf32x3", "ieee", "bf16"],
                        help="in-kernel product precision (KernelConfig.precision; mlp's products)")
    parser.add_argument("--reduce-block", type=int, default=1024, help="rows per program of mlp's reduction pass")
    parser.add_argument("--reduction", default="separate", choices=["separate", "overlapped"],
                        help="mlp's reduction pass in its own launch, or in the previous main pass's")
    parser.add_argument("--network", default="float32", choices=["float32", "float16"],
                        help="the nominal step's network: float32, or packed float16 (two parameters per instruction)")
    parser.add_argument("--out", default=None, help="write the JSON here (refuses an existing file)")
    args = parser.parse_args(argv)
    refuse_existing_out(parser, args.out)
    for config in args.configs:
        parse_config(config)
    try:
        import triton
    except ImportError:
        parser.error('needs the triton package: pip install "lopt[kernel-analysis]"')
    payload = {"benchmark": "kernel_sass", "jax": jax.__version__, "triton": triton.__version__,
               "capability": args.capability, "stages": args.stages, "precision": args.precision,
               "reduce_block": args.reduce_block, "reduction": args.reduction, "network": args.network,
               "shape": list(SHAPE), "rows": []}
    print(f"{'arch':<11} {'variant':<7} {'kernel':<22} {'config':>7} {'regs':>5} {'spill B':>7} "
          f"{'warps/SM':>8} {'instr/param':>11} {'LDG/param':>9}", flush=True)
    for arch in args.archs:
        for config in args.configs:
            start = time.perf_counter()
            for row in analyse(arch, config, stages=args.stages, capability=args.capability,
                               precision=args.precision, reduce_block=args.reduce_block,
                               reduction=args.reduction, network=args.network):
                row["seconds"] = time.perf_counter() - start
                payload["rows"].append(row)
                print(f"{arch:<11} {row['variant']:<7} {row['kernel'][:22]:<22} {config:>7} "
                      f"{row['registers']:>5} {row['stack_bytes'] + row['local_bytes']:>7} "
                      f"{row['occupancy_warps']:>8} {row['instructions_per_param']:>11.0f} "
                      f"{row['loads_per_param']:>9.1f}", flush=True)
    print("saved", save(f"kernel_sass_sm{args.capability}", payload, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

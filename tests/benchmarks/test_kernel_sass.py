"""The static kernel analysis: occupancy arithmetic, SASS and resource parsing, the Triton capture,
and what folding the pretrained optimizer's weights removes from its kernel."""

import importlib.util
import os
import re
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import kernel_sass

_HAS_TRITON = importlib.util.find_spec("triton") is not None


def test_occupancy_follows_the_sm90_register_file_and_program_limits():
    # 32 registers x 32 threads = 1,024 per warp: 64 warps fit the 65,536 registers, the SM's limit
    assert kernel_sass.occupancy_warps(32, 4) == 64
    # 40 registers -> 1,280 per warp, 5,120 per 4-warp program: 12 programs = 48 warps
    assert kernel_sass.occupancy_warps(40, 4) == 48
    # 255 registers x 32 = 8,160, allocated as 8,192 per warp: 8 single-warp programs
    assert kernel_sass.occupancy_warps(255, 1) == 8
    # one-warp programs with few registers stop at the 32 programs an SM holds
    assert kernel_sass.occupancy_warps(16, 1) == 32
    # shared memory: 100 KB programs (+1 KB reserved each) -> 2 per SM
    assert kernel_sass.occupancy_warps(32, 4, 100 * 1024) == 8


def test_opcode_counts_drop_predicates_and_modifiers():
    lines = ["        /*0000*/                   LDC R1, c[0x0][0x28] ;",
             "        /*0010*/              @P0 LDG.E.128 R4, desc[UR6][R2.64] ;",
             "        /*0020*/             @!P1 FFMA.FTZ R5, R0, 0.5, R5 ;",
             "        /*0030*/                   FMNMX R6, R3, -10, !PT ;",
             "  Function : lopt_nominal_step"]  # the last is not an instruction line
    text = "\n".join(lines)
    assert dict(kernel_sass.opcode_counts(text)) == {"LDC": 1, "LDG": 1, "FFMA": 1, "FMNMX": 1}


def test_resource_usage_parses_cuobjdump_and_refuses_other_text():
    text = "Resource usage:\n Function f:\n  REG:72 STACK:16 SHARED:1024 LOCAL:8 CONSTANT[0]:664 TEXTURE:0"
    assert kernel_sass.resource_usage(text) == {"registers": 72, "stack_bytes": 16,
                                                 "shared_bytes": 1024, "local_bytes": 8}
    with pytest.raises(ValueError, match="no resource line"):
        kernel_sass.resource_usage("cuobjdump: fatal")


def test_bad_config_names_the_format():
    with pytest.raises(ValueError, match="BLOCKxWARPS"):
        kernel_sass.parse_config("256-4")


def _scalar_loads(ttir: str) -> int:
    """``tt.load`` of a single f32 (the packed scalars), not of a tensor of pointers."""
    return len(re.findall(r"tt\.load %\w+(?:, [^:]*)? : !tt\.ptr<f32>", ttir))


def test_folding_removes_exactly_the_network_weights_from_the_loads():
    import lopt.pretrained
    from lopt.kernels import nominal_step

    theta, _ = lopt.pretrained.load()
    variants = kernel_sass.steps("pretrained", 128, 4)
    modules = {variant: dict(kernel_sass.triton_modules(*_unpack(variants[variant])))
               for variant in ("loaded", "folded")}
    assert set(modules["loaded"]) == {"lopt_factored_stats", "lopt_nominal_step"}  # statistics, main pass
    loaded, folded = (modules[variant]["lopt_nominal_step"] for variant in ("loaded", "folded"))
    removed = _scalar_loads(loaded) - _scalar_loads(folded)
    assert removed == len(nominal_step.folded_weights(theta)) == 138


def test_precision_option_reaches_mlps_kernel():
    """--precision bf16: the hidden product takes bfloat16 operands and the output layer is a third
    product, [256, 32] x [32, 8]; the default (tf32) has two products and no bfloat16 anywhere."""
    ir = {precision: dict(kernel_sass.triton_modules(*_unpack(kernel_sass.steps("mlp", 256, 4, precision=precision)
                                                             ["loaded"])))["lopt_mlp_step"]
          for precision in ("tf32", "bf16")}
    assert ir["tf32"].count("tt.dot ") == 2 and "bf16" not in ir["tf32"]
    assert ir["bf16"].count("tt.dot ") == 3
    assert re.search(r"tt\.dot [^\n]*tensor<256x32xbf16> \* tensor<32x8xbf16>", ir["bf16"])
    # stop 62: each hidden layer's ReLU is its rounding (cvt.rn.relu.bf16x2.f32, one per pair), the
    # bfloat16 weights arrive as bfloat16, and the product's columns are split in pairs (direction and
    # log-magnitude in one thread); stop 63: each summed over its 4 pairs, then the exponential per row
    assert ir["bf16"].count("cvt.rn.relu.bf16x2.f32") == 2 and "cvt.rn.relu" not in ir["tf32"]
    assert re.search(r"tt\.load [^\n]*tensor<32x32x!tt\.ptr<bf16>>", ir["bf16"])
    assert re.search(r"tt\.load [^\n]*tensor<32x8x!tt\.ptr<bf16>>", ir["bf16"])
    assert ir["bf16"].count("tt.split ") == 1 and ir["bf16"].count('"tt.reduce"(') == 2
    # stop 63: exp_mult is read per row (tiles.per_row), one more [256] float32 load in both (3 before)
    assert all(len(re.findall(r"tt\.load [^\n]*tensor<256x!tt\.ptr<f32>>", ir[p])) == 4 for p in ("tf32", "bf16"))


def _unpack(pair):
    step, args = pair
    return (step, *args)


@pytest.mark.skipif(not _HAS_TRITON, reason='needs the triton package (lopt[kernel-analysis])')
def test_compiled_folded_kernel_has_fewer_loads_and_no_more_registers():
    loaded = kernel_sass.analyse("pretrained", "128x4", stages=3, capability=90)
    by_variant = {r["variant"]: r for r in loaded if r["kernel"] == "lopt_nominal_step"}
    assert set(by_variant) == {"loaded", "folded"}
    a, b = by_variant["loaded"], by_variant["folded"]
    assert a["opcodes"]["LDG"] - b["opcodes"]["LDG"] >= 130  # ~138 scalar loads gone
    assert b["registers"] <= a["registers"]
    assert b["stack_bytes"] == 0 and b["local_bytes"] == 0
    assert b["occupancy_warps"] == kernel_sass.occupancy_warps(b["registers"], 4, b["shared_bytes"])
    assert b["instructions_per_param"] == pytest.approx(b["instructions"] * 128 / 128)


@pytest.mark.skipif(not _HAS_TRITON, reason='needs the triton package (lopt[kernel-analysis])')
def test_triton_ir_passes_make_each_bias_its_products_accumulator():
    """The GPU's pipeline combines ``dot(a, b, 0) + bias`` into ``dot(a, b, bias)`` before anything
    else; kernel_sass runs those passes too (triton.compile skips them for IR given as text)."""
    ttir = dict(kernel_sass.triton_modules(*_unpack(kernel_sass.steps("mlp", 128, 2, precision="bf16")
                                                     ["loaded"])))["lopt_mlp_step"]

    def biased_dots(text):  # products whose result is added to something afterwards
        results = re.findall(r"(%\w+) = tt\.dot ", text)
        return sum(bool(re.search(rf"arith\.addf [^\n]*{r}\b", text)) for r in results)

    assert biased_dots(ttir) == 3  # as Pallas emits it: each of the 3 products, then its bias
    with tempfile.TemporaryDirectory() as folder:
        passed = kernel_sass._ttir_passes(ttir, folder, 2, 3, 90)
    assert biased_dots(passed) == 0 and passed.count("tt.dot ") == 3

"""benchmarks/kernel_step.py --profile: each timed variant carries its device time per kernel, and
every one the launches of its compiled program (hlo_summary)."""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
import kernel_step


def test_profile_records_the_kernels_of_each_timed_variant(tmp_path):
    out = tmp_path / "ks.json"
    assert kernel_step.main(["--sizes", "3000", "--archs", "nominal", "--variants", "fused_apply_folded_b512w4",
                             "--repeats", "1", "--loops", "1", "--check-size", "0", "--profile",
                             "--out", str(out)]) in (0, None)
    (row,) = json.loads(out.read_text())["results"]
    profile = row["profile"]
    assert profile["calls"] == 5 and profile["kernel_ms_per_call"] > 0 and profile["kernels"]
    assert 0 < profile["busy_fraction"] <= 1.0
    # and what the compiled step launches (on the CPU the kernel is interpreted: XLA fusions, and
    # loops over its programs where there are several)
    hlo = row["hlo"]
    assert hlo["fusions"] > 0 and hlo["while_trips"] >= hlo["while_loops"]
    assert hlo["copies"] == sum(hlo["copy_shapes"].values())


def _launches(arch, variants=None):
    """``arch``'s optimizer, its benchmark theta and the launch configs of ``variants`` (default: ``arch``)."""
    lo = kernel_step.learned_optimizer(arch)
    return lo, kernel_step.trained_like_theta(arch, lo), kernel_step.VARIANTS[variants or arch]


def test_each_mlp_launch_is_timed_with_its_update_error():
    """variant_error: mlp's fused update at a launch config against the float32 XLA path. In interpret
    mode a TF32 launch computes float32 (error at float32 rounding) and a bf16 one rounds the hidden
    products' operands (bfloat16's 2**-8: the 4.6e-3 the H100 measured for every bf16 launch)."""
    lo, theta, launches = _launches("mlp")
    assert kernel_step.variant_error(lo, theta, launches["b256w4"], n=4096) < 1e-5
    err = kernel_step.variant_error(lo, theta, launches["b128w2bf16"], n=4096)
    assert 1e-3 < err < 2e-2, err
    # the reduction in the main pass's launch: the same arithmetic per entry
    assert kernel_step.variant_error(lo, theta, launches["b128w2ov"], n=4096) < 1e-5
    assert kernel_step.variant_error(lo, theta, launches["b128w2bf16ov"], n=4096) == err


def test_each_nominal_launch_is_timed_with_its_update_error():
    """nominal_variant_error: the pretrained step's fused update at a launch config against its XLA
    path. In interpret mode the float32 network agrees to float32 rounding, the float16 one
    (KernelConfig(network="float16")) to float16's (~4e-4)."""
    lo, theta, launches = _launches("pretrained", "nominal")
    assert kernel_step.nominal_variant_error(lo, theta, launches["b512w4"], n=8192) < 1e-5
    err = kernel_step.nominal_variant_error(lo, theta, launches["b512w4h16"], n=8192)
    assert 1e-5 < err < 3e-3, err

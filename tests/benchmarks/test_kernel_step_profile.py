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

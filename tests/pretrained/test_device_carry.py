"""scripts/device_carry.sh: the files a campaign session does not read go aside for a device call and
come back whole; nothing is overwritten either way."""

import os
import pathlib
import shutil
import subprocess

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "device_carry.sh"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _repo(tmp_path):
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "scripts" / "device_carry.sh")
    files = {"benchmarks/results/a.json": "1", "docs/x.md": "doc", "campaign/thetas/t.safetensors": "t",
             "campaign/logs/l.log": "log", "campaign/state.json": "{}", "campaign/warm_start.safetensors": "w",
             "campaign/best_theta.safetensors": "b", "lopt/__init__.py": ""}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    return root, files


def _run(root, hold, verb):
    return subprocess.run(["bash", "scripts/device_carry.sh", verb], cwd=root, capture_output=True, text=True, check=False,
                          env={**os.environ, "LOPT_CARRY_HOLD": str(hold)})


def test_aside_keeps_what_a_session_reads_and_back_restores_everything(tmp_path):
    root, files = _repo(tmp_path)
    hold = tmp_path / "hold"
    out = _run(root, hold, "aside")
    assert out.returncode == 0, out.stderr
    assert "MiB of 64" in out.stdout
    left = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert left == {"scripts/device_carry.sh", "campaign/state.json", "campaign/warm_start.safetensors",
                    "lopt/__init__.py"}
    assert (hold / "campaign/best_theta.safetensors").read_text() == "b"
    refused = _run(root, hold, "aside")  # a second aside would mix two sets of held files
    assert refused.returncode == 1 and "run 'back' first" in refused.stderr
    assert _run(root, hold, "back").returncode == 0
    for rel, text in files.items():
        assert (root / rel).read_text() == text
    assert not hold.exists()


def test_back_never_overwrites_a_path_that_is_in_the_tree_again(tmp_path):
    root, _ = _repo(tmp_path)
    hold = tmp_path / "hold"
    assert _run(root, hold, "aside").returncode == 0
    (root / "docs").mkdir()
    (root / "docs" / "new.md").write_text("written meanwhile")
    out = _run(root, hold, "back")
    assert out.returncode == 1 and "exists in the tree again" in out.stderr
    assert (root / "docs" / "new.md").read_text() == "written meanwhile"
    assert (hold / "docs" / "x.md").read_text() == "doc"  # still held, not lost
    assert _run(root, hold, "nonsense").returncode == 2

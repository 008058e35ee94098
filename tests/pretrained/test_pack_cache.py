"""scripts/pack_cache.py: what a campaign session sends back of its caches, under a size budget."""

import os
import pathlib
import subprocess
import sys
import tarfile

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "pack_cache.py"


def _write(path: pathlib.Path, size: int, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    os.utime(path, (mtime, mtime))


def _pack(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], check=False, capture_output=True, text=True)


def test_the_session_files_small_then_largest_go_first_within_the_budget(tmp_path):
    cache, start = tmp_path / "cache", tmp_path / ".started"
    start.write_text("")
    os.utime(start, (1000, 1000))
    _write(cache / "jit_call-old", 300_000, 500)  # carried in: older than the session
    _write(cache / "jit_call-big", 500_000, 2000)
    _write(cache / "jit_call-mid", 200_000, 2000)
    _write(cache / "lopt" / "normalizers" / "fit-a.json", 300, 2000)
    _write(cache / "autotune" / "x.pb", 150, 500)
    result = _pack(cache, tmp_path / "out.tgz", "--budget-mib", 0.6, "--newer-than", start)
    assert result.returncode == 0, result.stderr
    with tarfile.open(tmp_path / "out.tgz") as tar:
        names = sorted(tar.getnames())
    # 0.6 MiB = 629,145 bytes: the session's fit (300) and largest executable (500,000) fit, its next
    # (200,000) would pass the budget; then the older small file fits, the older executable does not
    assert names == ["./autotune/x.pb", "./jit_call-big", "./lopt/normalizers/fit-a.json"]
    assert "3 files" in result.stdout and "2 left out" in result.stdout


def test_an_existing_archive_is_never_overwritten_and_bad_budgets_are_refused(tmp_path):
    (tmp_path / "cache").mkdir()
    archive = tmp_path / "out.tgz"
    archive.write_bytes(b"keep")
    result = _pack(tmp_path / "cache", archive)
    assert result.returncode != 0 and "exists" in result.stderr and archive.read_bytes() == b"keep"
    result = _pack(tmp_path / "cache", tmp_path / "new.tgz", "--budget-mib", 0)
    assert result.returncode != 0 and "--budget-mib" in result.stderr


def test_a_missing_folder_is_refused(tmp_path):
    result = _pack(tmp_path / "no_such_folder", tmp_path / "out.tgz")
    assert result.returncode != 0 and "is not a folder" in result.stderr

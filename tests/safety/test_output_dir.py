"""lopt.output_dir: a run's directory is refused or moved aside, never overwritten; one live process per directory."""

import doctest
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest

import lopt.output_dir
from lopt.output_dir import DirectoryInUseError, DirectoryLock, OutputExistsError, claim

MODULE = lopt.output_dir.__file__


def snapshot(directory):
    """Every file under ``directory`` with the SHA-256 of its bytes."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_claim_refuses_and_leaves_every_byte_then_moves_aside_on_overwrite(tmp_path):
    (tmp_path / "run.json").write_text('{"a": 1}')
    (tmp_path / "notes.txt").write_text("mine")  # not an output: never touched
    before = snapshot(tmp_path)
    with pytest.raises(OutputExistsError, match=r"already holds a run \(run.json\); pass --overwrite"):
        claim(tmp_path, ["run.json", "eval.csv"], overwrite=False, what="a run", hint="pass --overwrite.")
    assert snapshot(tmp_path) == before
    backup = claim(tmp_path, ["run.json", "eval.csv"], overwrite=True, what="a run")
    assert backup.parent == tmp_path and backup.name.startswith("previous-")
    assert (backup / "run.json").read_text() == '{"a": 1}'
    assert not (tmp_path / "run.json").exists() and (tmp_path / "notes.txt").read_text() == "mine"
    assert claim(tmp_path, ["run.json"], overwrite=False, what="a run") is None  # nothing left to refuse
    with pytest.raises(ValueError, match="is not a directory"):
        claim(tmp_path / "notes.txt", ["run.json"], overwrite=True, what="a run")


def _holder(directory):
    """A separate process that takes the lock and sleeps (loads output_dir.py alone: no JAX import)."""
    code = ("import importlib.util, sys, time\n"
            f"spec = importlib.util.spec_from_file_location('od', {MODULE!r})\n"
            "od = importlib.util.module_from_spec(spec); spec.loader.exec_module(od)\n"
            f"od.DirectoryLock({str(directory)!r}).acquire(); print('locked', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def test_lock_keeps_a_second_live_process_out_and_is_taken_over_after_sigkill(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(DirectoryInUseError, match=f"in use by process {proc.pid} "):
            DirectoryLock(tmp_path).acquire()
    finally:
        _kill(proc)
    assert DirectoryLock(tmp_path).holder()["pid"] == proc.pid  # the dead holder's record is still there
    with DirectoryLock(tmp_path) as lock:  # ... and the lock is free: the kernel dropped it with the process
        assert lock.holder()["pid"] == os.getpid()
        with DirectoryLock(tmp_path):  # re-entrant within one process
            pass
        assert lock.holder()["pid"] == os.getpid()  # still held after the inner release
    assert lock.holder() == {}  # released: an empty record


def test_lock_released_by_one_holder_is_free_for_the_next_process(tmp_path):
    with DirectoryLock(tmp_path):
        pass
    start = time.time()
    proc = _holder(tmp_path)  # would fail to lock (and exit without printing) if the lock had leaked
    _kill(proc)
    assert time.time() - start < 30


def test_docstring_examples():
    result = doctest.testmod(lopt.output_dir, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 5

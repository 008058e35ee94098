"""The set-up cache's pruning: only what the current code cannot read goes, and the rest still reads."""

import json

import jax.numpy as jnp
import pytest

import lopt
from lopt.cli import main
from lopt.meta.cache_pruning import prune, scan
from lopt.meta.program_cache import ProgramCache, available
from lopt.meta.structure_fit_cache import StructureFitCache
from lopt.meta.structure_normalizer import fit_structure

pytestmark = pytest.mark.skipif(not available(), reason="jax.export serialisation needs the flatbuffers package")


def _double(x):
    return {"y": 2.0 * x}


def _folder(tmp_path):
    """A cache folder with one current program and fit, and stale or foreign files beside them."""
    ProgramCache(tmp_path).compile(_double, (jnp.ones(3),), name="double")
    configs = [lopt.tasks.get("quadratic").complete({"dim": 3, "seed": s}) for s in range(2)]
    pool = lopt.tasks.stack([lopt.tasks.build(c) for c in configs])
    StructureFitCache(tmp_path).store(configs, fit_structure(pool, num_steps=5), num_steps=5)
    record = json.loads(next(tmp_path.glob("program-*.json")).read_text())
    (tmp_path / "program-old-0000.json").write_text(json.dumps({**record, "code": "0" * 16,
                                                                "module_file": "program-old-0000.aa.stablehlo"}))
    (tmp_path / "program-old-0000.aa.stablehlo").write_bytes(b"old module")
    (tmp_path / "program-orphan.bb.stablehlo").write_bytes(b"a module no record names")
    (tmp_path / "structure-quadratic-broken.json").write_text("{not json")
    (tmp_path / "prewarm-0123.json").write_text(json.dumps({"structures": 2}))  # before records had a code
    (tmp_path / "mlp-4b5b15473c4af7cf1098.json").write_text("{}")  # another cache's file: never touched
    return configs


def test_scan_finds_the_stale_entries_and_prune_removes_only_them(tmp_path):
    configs = _folder(tmp_path)
    entries = scan(tmp_path)
    stale = {(e.kind, e.reason): [p.name for p in e.files] for e in entries if e.stale}
    assert stale == {
        ("program", "other lopt sources"): ["program-old-0000.json", "program-old-0000.aa.stablehlo"],
        ("program", "no record names this module"): ["program-orphan.bb.stablehlo"],
        ("fit", "unreadable"): ["structure-quadratic-broken.json"],
        ("prewarm", "written by an older lopt"): ["prewarm-0123.json"]}
    assert [e.kind for e in entries if not e.stale] == ["program", "fit"]
    assert prune(entries) == (5, sum(e.bytes for e in entries if e.stale))
    assert not any(e.stale for e in scan(tmp_path)) and (tmp_path / "mlp-4b5b15473c4af7cf1098.json").exists()
    # what stayed still reads back
    cache = ProgramCache(tmp_path)
    assert float(cache.compile(_double, (jnp.ones(3),), name="double")(jnp.ones(3))["y"][0]) == 2.0
    assert cache.hits == 1
    assert StructureFitCache(tmp_path).lookup(configs, num_steps=5) is not None
    assert prune(entries) == (0, 0)  # already gone: nothing to do, no error


def test_the_command_lists_and_prunes_only_when_asked(tmp_path, capsys):
    _folder(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["cache", "--dir", str(tmp_path)]) == 0
    listed = capsys.readouterr().out
    assert "program      1 current" in listed and "2 stale" in listed and "--prune" in listed
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # listing changes nothing
    assert main(["cache", "--dir", str(tmp_path), "--prune"]) == 0
    assert "removed 5 files" in capsys.readouterr().out
    assert len(list(tmp_path.iterdir())) == len(before) - 5

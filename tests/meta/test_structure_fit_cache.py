"""StructureFitCache: per-structure normaliser fits on disk, verified on every read, used by the engine."""

import json
import logging
import pathlib

import jax
import pytest

import lopt
from lopt.meta.mixture_engine import MixtureEngine
from lopt.meta.structure_fit_cache import StructureFitCache
from lopt.meta.structure_normalizer import fit_structure
from lopt.meta.truncation import ConstantHorizon
from lopt.source_fingerprint import source_fingerprint

CONFIGS = [lopt.tasks.get("quadratic").complete({"dim": 4, "seed": s}) for s in range(3)]


def _pool(configs=CONFIGS):
    return lopt.tasks.stack([lopt.tasks.build(c) for c in configs])


def _refuse():
    raise AssertionError("the pool was built although its fits are cached")


def test_fits_once_then_reads_exactly_what_was_fitted(tmp_path):
    cache = StructureFitCache(tmp_path)
    want = fit_structure(_pool(), num_steps=15)
    assert cache.lookup(CONFIGS, num_steps=15) is None
    assert cache.fits(CONFIGS, _pool, num_steps=15) == want
    assert cache.fits(CONFIGS, _refuse, num_steps=15) == want  # read back bit for bit
    assert len(list(tmp_path.iterdir())) == 1


def test_other_settings_or_configs_are_other_entries(tmp_path):
    cache = StructureFitCache(tmp_path)
    cache.fits(CONFIGS, _pool, num_steps=15)
    assert cache.lookup(CONFIGS, num_steps=16) is None
    assert cache.lookup(CONFIGS, num_steps=15, num_seeds=2) is None
    assert cache.lookup(CONFIGS, num_steps=15, learning_rates=[1e-3, 1e-2]) is None
    assert cache.lookup(CONFIGS[::-1], num_steps=15) is None  # the order is the pool's order
    assert cache.lookup(CONFIGS[:2], num_steps=15) is None


@pytest.mark.parametrize("damage", ["number", "digest", "truncate", "configs"])
def test_a_damaged_file_is_refitted_with_a_warning(tmp_path, damage):
    cache = StructureFitCache(tmp_path)
    want = cache.fits(CONFIGS, _pool, num_steps=15)
    path = cache.path(CONFIGS, num_steps=15)
    text = path.read_text()
    if damage == "truncate":
        path.write_text(text[: len(text) // 2])
    else:
        document = json.loads(text)
        if damage == "number":
            document["normalizers"][0][1] -= 0.5  # a better "best loss" than any Adam run reached
        elif damage == "digest":
            document["digest"] = "0" * 64
        else:
            document["configs"][0]["dim"] = 5
        path.write_text(json.dumps(document))
    with pytest.warns(RuntimeWarning, match="refitted"):
        assert cache.lookup(CONFIGS, num_steps=15) is None
    with pytest.warns(RuntimeWarning):
        assert cache.fits(CONFIGS, _pool, num_steps=15) == want
    assert cache.lookup(CONFIGS, num_steps=15) == want  # rewritten whole


def test_bad_inputs_are_refused(tmp_path):
    cache = StructureFitCache(tmp_path)
    with pytest.raises(ValueError, match="no configs"):
        cache.lookup([], num_steps=15)
    with pytest.raises(TypeError, match="TaskConfig"):
        cache.lookup([{"family": "quadratic", "dim": 4}], num_steps=15)
    with pytest.raises(ValueError, match="2 fits for 3 configs"):
        cache.store(CONFIGS, fit_structure(_pool(CONFIGS[:2]), num_steps=15), num_steps=15)
    with pytest.raises(ValueError, match="matches no file"):
        source_fingerprint("no_such_folder/*.py")


def test_the_engine_fits_nothing_the_second_time(tmp_path, caplog):
    dist = lopt.tasks.mixture({"quadratic": 1.0, "losg": 1.0}, num_structures=2)
    structures = [dist.structures("quadratic")[0], dist.structures("losg")[0]]

    def engine():
        return MixtureEngine(lopt.learned.get("learnable_adam", lr=0.01), dist, structures,
                             truncation=ConstantHorizon(10), num_tasks=2, unroll_length=5, configs_per_bucket=2,
                             redraw_every=2, heldout_per_bucket=1, eval_steps=10, normalizer_steps=10,
                             fit_cache=StructureFitCache(tmp_path))

    with caplog.at_level(logging.INFO, logger="lopt.meta"):
        first = engine()
        assert "normalisers: 0 of 2 structures from the cache" in caplog.text
        theta = first.lopt.init(jax.random.key(0))
        scores = first.evaluate(theta, key=jax.random.key(1))
        caplog.clear()
        second = engine()
        assert "normalisers: 2 of 2 structures from the cache (read in" in caplog.text
        assert "built 0 pools" in caplog.text
    assert second._first_fits == first._first_fits
    assert [b.gap for b in second.buckets] == [b.gap for b in first.buckets]
    # the held-out pools' fits are cached too, and give the same scores
    files = len(list(tmp_path.iterdir()))
    assert second.evaluate(theta, key=jax.random.key(1)) == scores
    assert len(list(tmp_path.iterdir())) == files == 4  # 2 training pools + 2 held-out pools
    assert (first.heldout_fits_from_cache, second.heldout_fits_from_cache) == (0, 2)


def test_docstring_examples():
    import doctest

    from lopt.meta import structure_fit_cache

    assert doctest.testmod(structure_fit_cache).failed == 0


def test_the_key_follows_the_code_that_trains_not_the_code_that_draws_configs(tmp_path, monkeypatch):
    import shutil

    import lopt.source_fingerprint as fingerprint
    from lopt.meta import structure_fit_cache

    copy = tmp_path / "lopt"
    shutil.copytree(pathlib.Path(lopt.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprint, "_LOPT_ROOT", str(copy))

    def key():
        fingerprint.source_fingerprint.cache_clear()
        return structure_fit_cache.code_fingerprint()

    try:
        before = key()
        for drawing in ("catalogue.py", "mixture.py", "cost_workers.py"):  # which configs, not their numbers
            with open(copy / "tasks" / drawing, "a") as f:
                f.write("\n# edited\n")
        assert key() == before
        with open(copy / "tasks" / "families" / "quadratic.py", "a") as f:  # how a config trains
            f.write("\n# edited\n")
        assert key() != before
        with pytest.raises(ValueError, match="do not exist"):
            fingerprint.source_fingerprint("tasks/*.py", exclude=("tasks/no_such_file.py",))
    finally:
        monkeypatch.undo()
        fingerprint.source_fingerprint.cache_clear()

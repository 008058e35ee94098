"""The command line's persistent compilation cache: where it goes, and how to keep it off."""

import os

import jax
import pytest

from lopt.cli.compilation_cache import enable_compilation_cache


@pytest.fixture
def cache_settings():
    saved = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    yield
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", saved[1])


def test_the_cache_goes_under_xdg_cache_home(tmp_path, monkeypatch, cache_settings):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("LOPT_COMPILATION_CACHE", raising=False)
    jax.config.update("jax_compilation_cache_dir", None)
    folder = enable_compilation_cache()
    assert folder == os.path.join(str(tmp_path), "lopt", "jax-compilation-cache")
    assert jax.config.jax_compilation_cache_dir == folder
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0


def test_an_explicit_cache_folder_is_kept(tmp_path, monkeypatch, cache_settings):
    monkeypatch.delenv("LOPT_COMPILATION_CACHE", raising=False)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    assert enable_compilation_cache() == str(tmp_path / "mine")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")


def test_zero_keeps_it_off(tmp_path, monkeypatch, cache_settings):
    monkeypatch.setenv("LOPT_COMPILATION_CACHE", "0")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    jax.config.update("jax_compilation_cache_dir", None)
    assert enable_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir is None

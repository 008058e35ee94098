"""Test-wide settings: a persistent XLA compilation cache so identical programs compile once.

Tests marked ``@pytest.mark.slow`` under the folders in ``SLOW_OPT_IN_FOLDERS`` (many sampled
configs per family) are skipped unless selected with ``-m slow`` (or any ``-m`` expression naming
``slow``) or ``LOPT_RUN_SLOW=1`` is set; slow tests elsewhere run by default.
"""

import os
import tempfile
from pathlib import Path

import jax
import pytest

SLOW_OPT_IN_FOLDERS = tuple(Path(__file__).parent / name for name in ("tasks", "tasks_dist"))


def pytest_collection_modifyitems(config, items):
    if "slow" in (config.getoption("markexpr") or "") or os.environ.get("LOPT_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow; run with -m slow or LOPT_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords and any(folder in Path(item.path).parents for folder in SLOW_OPT_IN_FOLDERS):
            item.add_marker(skip)

# `lopt train` splits its tasks over one host device per core (lopt.cli.host_devices); the runs that
# tests start in subprocesses are compared bit for bit with one-device runs in this process, so they
# keep one host device unless a test asks for more (tests/test_host_devices.py).
os.environ.setdefault("LOPT_HOST_DEVICES", "1")
# Catalogue costs are estimated in this process: two pytest workers already fill the two cores, and
# tests/tasks_dist/test_cost_workers.py checks the worker processes against it.
os.environ.setdefault("LOPT_COST_WORKERS", "1")

jax.config.update("jax_compilation_cache_dir",
                  os.environ.get("LOPT_TEST_JAX_CACHE", os.path.join(tempfile.gettempdir(), "lopt-test-jax-cache")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Frees each module's compiled programs afterwards: xdist workers otherwise grow to ~7 GB.

    Recompiling a program another module needs again is cheap: it comes from the disk cache above.
    """
    yield
    jax.clear_caches()

"""Tests of the task distribution (new families, augmentation, budget, mixture, CLI, docs).

Tests marked ``@pytest.mark.slow`` in this folder are skipped unless selected with ``-m slow``
(or any ``-m`` expression naming ``slow``) or ``LOPT_RUN_SLOW=1`` is set.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    if "slow" in (config.getoption("markexpr") or "") or os.environ.get("LOPT_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow; run with -m slow or LOPT_RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords and _HERE in Path(item.path).parents:
            item.add_marker(skip)

"""Tests of the task distribution (new families, augmentation, budget, mixture, CLI, docs).

Slow tests in this folder are opt-in (``-m slow`` or ``LOPT_RUN_SLOW=1``): see tests/conftest.py.
"""

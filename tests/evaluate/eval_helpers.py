"""Small suites for the evaluation tests: quadratics of one structure compile once and run fast."""

from __future__ import annotations

import lopt
from lopt.evaluate import Suite, SuiteTask
from lopt.tasks.config import TaskConfig


def tiny_suite(*, num_tasks: int = 2, num_steps: int = 12, num_seeds: int = 2, num_tuning: int = 0,
               dim: int = 3) -> Suite:
    """Quadratics of dimension ``dim`` (one compiled program per optimizer for all of them)."""
    family = lopt.tasks.get("quadratic")

    def task(seed: int) -> SuiteTask:
        cfg = family.complete({"dim": dim, "seed": seed, "condition_number": 10.0})
        return SuiteTask(TaskConfig(cfg), f"quadratic seed {seed}", None, 1)

    return Suite("tiny", tuple(task(i) for i in range(num_tasks)),
                 tuple(task(100 + i) for i in range(num_tuning)), num_steps, num_seeds, max(1, num_steps // 2))

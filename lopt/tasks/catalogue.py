"""Drawing a mixture's catalogue: the structures each family offers, under a budget.

A family's catalogue is the first ``num_structures`` distinct structures its sampler proposes
(from a stream seeded by the mixture seed and the family name) whose cost fits the budget, or
fewer if ``max_tries * num_structures`` candidates run out. The proposals do not depend on which
candidates the budget admits, so candidates can be drawn ahead and their costs estimated
together: :func:`draw_catalogues` advances every family in rounds, hands each round's uncached
costs to worker processes at once (:func:`lopt.tasks.cost_cache.prefetch_costs`), then admits the
candidates in the order the family proposed them. The catalogue is therefore exactly the one a
one-candidate-at-a-time draw finds; only the wall time differs (the cold 16-structure ``taskset``
draw estimates ~290 candidates in two rounds, :func:`_ahead`).

Example:
    >>> import numpy as np
    >>> from lopt.tasks.budget import Budget
    >>> from lopt.tasks.catalogue import draw_catalogues
    >>> def propose(family, rng):
    ...     return {"family": "quadratic", "dim": int(rng.integers(2, 40))}
    >>> found = draw_catalogues(["quadratic"], propose, key_of=lambda c: str(c["dim"]), num_structures=3,
    ...                         max_tries=20, budget=Budget(max_params=10), seed=0)
    >>> [c["dim"] <= 10 for c in found["quadratic"]]
    [True, True, True]
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lopt.tasks.budget import Budget
from lopt.tasks.cost_cache import cached_cost, prefetch_costs
from lopt.tasks.cost_workers import CostWorkers, worker_count

__all__ = ["draw_catalogues"]

_LOG = logging.getLogger("lopt.tasks")


@dataclasses.dataclass
class _FamilyDraw:
    """One family's draw in progress: its proposal stream and what it has kept so far."""

    rng: np.random.Generator
    found: dict[str, Any] = dataclasses.field(default_factory=dict)
    pending: list[tuple[str, Any]] = dataclasses.field(default_factory=list)
    drawn: int = 0


def draw_catalogues(families: Sequence[str], propose: Callable[[str, np.random.Generator], Mapping[str, Any]], *,
                    key_of: Callable[[Mapping[str, Any]], str], num_structures: int, max_tries: int,
                    budget: Budget | None, seed: int) -> dict[str, list]:
    """Each family's catalogue, the costs of all families estimated together.

    Args:
        families: the families to draw.
        propose: ``(family, rng) -> config``, the family's next candidate from its stream.
        key_of: a config's structure key (equal keys are one structure).
        num_structures: structures wanted per family.
        max_tries: candidates drawn per wanted structure before a family is closed.
        budget: candidates whose cost exceeds it are skipped (``None``: no bound).
        seed: the catalogues' seed (with the family name, it seeds each family's stream).

    Returns:
        ``{family: [config, ...]}`` in the order the structures were found.

    Raises:
        ValueError: a family has no structure within the budget.
    """
    count = worker_count() if budget is not None and budget.max_seconds is None else 0
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        workers = stack.enter_context(CostWorkers(count)) if count > 1 else None
        found, costed = _draw(families, propose, key_of, num_structures, max_tries * num_structures, budget, seed,
                              workers)
    _LOG.info("catalogue: %d families, %d structures in %.1f s (%s)", len(found), sum(map(len, found.values())),
              time.perf_counter() - start,
              f"{costed} costs estimated by {count} worker processes" if workers else "one process")
    return found


def _ahead(missing: int, admitted: int, drawn: int) -> int:
    """Candidates to draw for ``missing`` structures, after ``admitted`` of ``drawn`` fitted the budget.

    The first round draws one per missing structure (all a serial draw could need if every one
    fits); later rounds draw half as many again as the family's admission rate so far asks for. A
    round waits for its slowest candidate: the 16-structure ``taskset`` draw took seven rounds
    (192, 40, 11, 8, 6, 4 and 2 candidates) drawing one per missing structure, and takes two
    (192 and 100) this way. Drawing ahead never changes the catalogue, only what is estimated.
    """
    if drawn == 0:
        return max(1, missing)
    rate = (admitted + 3) / (drawn + 4)  # the prior: 3 of 4 fit
    return max(1, math.ceil(1.5 * missing / rate))


def _draw(families: Sequence[str], propose: Callable, key_of: Callable, num_structures: int, tries: int,
          budget: Budget | None, seed: int, workers: CostWorkers | None) -> tuple[dict[str, list], int]:
    """The catalogues, and how many costs the workers estimated."""
    draws = {f: _FamilyDraw(np.random.default_rng([seed, zlib.crc32(f.encode())])) for f in families}
    catalogues: dict[str, list] = {}
    costed = 0
    while draws:
        wanted = []
        for family, draw in draws.items():
            if draw.pending:
                continue
            count = min(tries - draw.drawn, _ahead(num_structures - len(draw.found), len(draw.found), draw.drawn))
            for _ in range(count):
                cfg = propose(family, draw.rng)
                draw.pending.append((key_of(cfg), cfg))
            draw.drawn += count
            wanted += [(cfg, key) for key, cfg in draw.pending if key not in draw.found]
        if workers is not None:
            costed += prefetch_costs(budget, wanted, workers=workers)
        for family in list(draws):
            draw = draws[family]
            while draw.pending and len(draw.found) < num_structures:
                key, cfg = draw.pending.pop(0)
                if key not in draw.found and (budget is None or budget.admits(cached_cost(budget, cfg, key))):
                    draw.found[key] = cfg
            if len(draw.found) == num_structures or (not draw.pending and draw.drawn >= tries):
                if not draw.found:
                    raise ValueError(f"Mixture: no structure of {family!r} fits {budget} in {tries} tries; raise the "
                                     "budget or drop the family.")
                catalogues[family] = list(draw.found.values())
                del draws[family]
    return catalogues, costed

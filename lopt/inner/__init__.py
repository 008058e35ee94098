"""Inner training: train a task with an optimizer as one compiled program.

Example:
    >>> import jax, optax, lopt
    >>> task = lopt.tasks.build({"family": "quadratic", "dim": 5})
    >>> curves = lopt.inner.train(task, optax.sgd(0.1), key=jax.random.key(0), num_steps=20)
    >>> curves.train_loss.shape
    (20,)
"""

from lopt.inner.training import (
    BLOW_UP_FACTOR,
    Curves,
    InnerState,
    evaluate,
    init_state,
    iterate,
    num_evals,
    run_steps,
    train,
    train_many,
)

__all__ = ["BLOW_UP_FACTOR", "Curves", "InnerState", "evaluate", "init_state", "iterate", "num_evals", "run_steps", "train",
           "train_many"]

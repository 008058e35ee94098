"""Adam8p: TaskSet's Adam with 8 hyperparameters (l1/l2 regularisation and a decaying learning
rate; Metz et al., arXiv 2002.11887)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from lopt.optimizers.schedules import linear_exponential_schedule
from lopt.optimizers.validation import BETA, NON_NEGATIVE, POSITIVE, check_number, require_params

__all__ = ["adam8p"]

_SQRT_FLOOR = 1e-10  # added to v_hat inside the square root, as in TaskSet


def adam8p(
    learning_rate: ArrayLike,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    l1: ArrayLike = 0.0,
    l2: ArrayLike = 0.0,
    linear_decay: ArrayLike = 0.0,
    exponential_decay: ArrayLike = 0.0,
) -> optax.GradientTransformation:
    """Adam with l1 and l2 regularisation and a linear-times-exponential learning-rate decay.

    Follows ``Adam8POptimizer`` of TaskSet (google-research ``task_set/optimizers/adam8p.py``,
    arXiv 2002.11887), whose regularisers are added to the *loss*
    (``loss + l1 * ||x||_1 + l2 * ||x||_2**2``), hence to the gradient. At update ``t`` (1 on
    the first update):

    - ``g = grad + l1 * sign(param) + 2 * l2 * param``;
    - ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g**2``;
    - ``m_hat = m / (1 - b1**t)``, ``v_hat = v / (1 - b2**t)``;
    - ``lr = learning_rate * max(1 - linear_decay * (t - 1), 0) * exp(-exponential_decay * (t - 1))``
      (:func:`~lopt.optimizers.linear_exponential_schedule`; TaskSet's default
      ``training_steps=10000``, under which the step count is not rescaled);
    - ``update = -lr * m_hat / (sqrt(v_hat + 1e-10) + eps)``.

    The defaults ``l1 = l2 = 0`` (TaskSet's are 1e-7) make ``adam8p`` plain Adam up to the
    ``1e-10`` under the square root.

    Args:
        learning_rate: initial learning rate, > 0.
        b1: decay of the gradient average, in [0, 1).
        b2: decay of the squared-gradient average, in [0, 1).
        eps: added to ``sqrt(v_hat + 1e-10)``, >= 0.
        l1: weight of the l1 penalty on params, >= 0.
        l2: weight of the squared l2 penalty on params, >= 0.
        linear_decay: fraction of the learning rate removed per step, >= 0.
        exponential_decay: exponential decay rate of the learning rate per step, >= 0.

    Returns:
        An ``optax.GradientTransformation`` whose state is ``optax.ScaleByAdamState`` and whose
        ``update`` needs ``params``.

    Raises:
        TypeError, ValueError: for a hyperparameter of the wrong type or range.

    Example:
        >>> import jax.numpy as jnp
        >>> opt = adam8p(learning_rate=0.1, l2=0.5)
        >>> params = jnp.array([1.0])
        >>> state = opt.init(params)
        >>> updates, state = opt.update(jnp.array([0.0]), state, params)
        >>> round(float(updates[0]), 4)  # g = 0 + 2 * 0.5 * 1; Adam's first step is -lr * sign(g)
        -0.1
    """
    name = "adam8p"
    check_number(name, "learning_rate", learning_rate, POSITIVE, example=0.001)
    check_number(name, "b1", b1, BETA, example=0.9)
    check_number(name, "b2", b2, BETA, example=0.999)
    check_number(name, "eps", eps, NON_NEGATIVE, example=1e-8)
    check_number(name, "l1", l1, NON_NEGATIVE, example=1e-6)
    check_number(name, "l2", l2, NON_NEGATIVE, example=1e-6)
    check_number(name, "linear_decay", linear_decay, NON_NEGATIVE, example=1e-5)
    check_number(name, "exponential_decay", exponential_decay, NON_NEGATIVE, example=1e-5)
    schedule = linear_exponential_schedule(learning_rate, linear_decay, exponential_decay)

    def init(params: Any) -> optax.ScaleByAdamState:
        return optax.scale_by_adam().init(params)  # count, mu, nu: separate buffers (donatable)

    def update(
        grads: Any, state: optax.ScaleByAdamState, params: Any = None
    ) -> tuple[Any, optax.ScaleByAdamState]:
        require_params(name, params, "for the l1 and l2 terms")
        t = (state.count + 1).astype(jnp.float32)
        lr = schedule(state.count)
        tree = jax.tree.map
        grads = tree(lambda g, p: g + l1 * jnp.sign(p) + 2.0 * l2 * p, grads, params)
        mu = tree(lambda m, g: (b1 * m + (1.0 - b1) * g).astype(m.dtype), state.mu, grads)
        nu = tree(lambda v, g: (b2 * v + (1.0 - b2) * g * g).astype(v.dtype), state.nu, grads)

        def step(m, v, p):
            m_hat = m / (1.0 - b1**t)
            v_hat = v / (1.0 - b2**t)
            return (-lr * m_hat / (jnp.sqrt(v_hat + _SQRT_FLOOR) + eps)).astype(p.dtype)

        updates = tree(step, mu, nu, params)
        return updates, optax.ScaleByAdamState(optax.safe_increment(state.count), mu, nu)

    return optax.GradientTransformation(init, update)

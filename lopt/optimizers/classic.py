"""Classic hand-designed optimizers, checked and delegated to optax.

SGD, momentum, RMSProp and Adam exist in optax, so these factories only validate their
hyperparameters (concrete values; traced values pass through for ``jax.vmap``) and return the
optax transformation. Their updates are exactly optax's.
"""

from __future__ import annotations

import optax
from jax.typing import ArrayLike

from lopt.optimizers.validation import BETA, NON_NEGATIVE, POSITIVE, check_bool, check_number

__all__ = ["adam", "momentum", "rmsprop", "sgd"]


def sgd(learning_rate: ArrayLike) -> optax.GradientTransformation:
    """Plain stochastic gradient descent: ``update = -learning_rate * grad``.

    Args:
        learning_rate: step size, > 0 (a number or a scalar jax array, traced ones included).

    Returns:
        An ``optax.GradientTransformation``.

    Raises:
        TypeError, ValueError: for a non-numeric or non-positive learning rate.

    Example:
        >>> import jax.numpy as jnp
        >>> opt = sgd(learning_rate=0.1)
        >>> params = jnp.array([1.0, -2.0])
        >>> updates, _ = opt.update(jnp.array([1.0, 1.0]), opt.init(params))
        >>> updates
        Array([-0.1, -0.1], dtype=float32)
    """
    check_number("sgd", "learning_rate", learning_rate, POSITIVE, example=0.01)
    return optax.sgd(learning_rate)


def momentum(
    learning_rate: ArrayLike, momentum: ArrayLike = 0.9, nesterov: bool = False
) -> optax.GradientTransformation:
    """SGD with heavy-ball or Nesterov momentum (``optax.sgd`` with ``momentum``).

    Heavy ball: ``m = momentum * m + grad``, ``update = -learning_rate * m``.
    Nesterov: the same ``m``, but ``update = -learning_rate * (grad + momentum * m)``.

    Args:
        learning_rate: step size, > 0.
        momentum: decay of the velocity, in [0, 1).
        nesterov: use Nesterov momentum. A Python bool: it selects the update rule.

    Returns:
        An ``optax.GradientTransformation``.

    Raises:
        TypeError, ValueError: for a hyperparameter of the wrong type or range.

    Example:
        >>> import jax.numpy as jnp
        >>> opt = momentum(learning_rate=0.1, momentum=0.5, nesterov=True)
        >>> g = jnp.array([1.0])
        >>> updates, _ = opt.update(g, opt.init(g))
        >>> updates  # -0.1 * (1 + 0.5 * 1)
        Array([-0.15], dtype=float32)
    """
    check_number("momentum", "learning_rate", learning_rate, POSITIVE, example=0.01)
    check_number("momentum", "momentum", momentum, BETA, example=0.9)
    check_bool("momentum", "nesterov", nesterov, traceable=False)
    return optax.sgd(learning_rate, momentum=momentum, nesterov=bool(nesterov))


def rmsprop(
    learning_rate: ArrayLike,
    decay: ArrayLike = 0.9,
    eps: ArrayLike = 1e-8,
    momentum: ArrayLike = 0.0,
) -> optax.GradientTransformation:
    """RMSProp (Tieleman & Hinton, 2012), optionally with momentum (``optax.rmsprop``).

    ``v = decay * v + (1 - decay) * grad**2``, ``u = grad / sqrt(v + eps)`` (eps inside the
    square root, optax's default), then ``m = momentum * m + u`` and
    ``update = -learning_rate * m``. With ``momentum=0`` this is plain RMSProp.

    Args:
        learning_rate: step size, > 0.
        decay: decay of the squared-gradient average, in [0, 1).
        eps: added to the average inside the square root, >= 0.
        momentum: momentum on the scaled gradient, in [0, 1).

    Returns:
        An ``optax.GradientTransformation``.

    Raises:
        TypeError, ValueError: for a hyperparameter of the wrong type or range.

    Example:
        >>> import jax.numpy as jnp
        >>> opt = rmsprop(learning_rate=0.01, decay=0.75, eps=0.0)
        >>> g = jnp.array([2.0])
        >>> updates, _ = opt.update(g, opt.init(g))
        >>> updates  # -0.01 * 2 / sqrt(0.25 * 4)
        Array([-0.02], dtype=float32)
    """
    check_number("rmsprop", "learning_rate", learning_rate, POSITIVE, example=0.001)
    check_number("rmsprop", "decay", decay, BETA, example=0.9)
    check_number("rmsprop", "eps", eps, NON_NEGATIVE, example=1e-8)
    check_number("rmsprop", "momentum", momentum, BETA, example=0.9)
    return optax.rmsprop(learning_rate, decay=decay, eps=eps, momentum=momentum)


def adam(
    learning_rate: ArrayLike, b1: ArrayLike = 0.9, b2: ArrayLike = 0.999, eps: ArrayLike = 1e-8
) -> optax.GradientTransformation:
    """Adam (Kingma & Ba, arXiv 1412.6980), as ``optax.adam``.

    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g**2``, ``m_hat = m / (1 - b1**t)``,
    ``v_hat = v / (1 - b2**t)``, ``update = -learning_rate * m_hat / (sqrt(v_hat) + eps)``,
    with ``t = 1`` on the first update.

    Args:
        learning_rate: step size, > 0.
        b1: decay of the gradient average, in [0, 1).
        b2: decay of the squared-gradient average, in [0, 1).
        eps: added to ``sqrt(v_hat)``, >= 0.

    Returns:
        An ``optax.GradientTransformation``.

    Raises:
        TypeError, ValueError: for a hyperparameter of the wrong type or range.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> def final_loss(lr):
        ...     opt, x = adam(learning_rate=lr), jnp.array([3.0])
        ...     state = opt.init(x)
        ...     for _ in range(10):
        ...         updates, state = opt.update(2 * x, state)
        ...         x = x + updates
        ...     return (x ** 2).sum()
        >>> losses = jax.vmap(final_loss)(jnp.array([0.01, 0.1, 0.3]))
        >>> bool(losses[2] < losses[0])
        True
    """
    check_number("adam", "learning_rate", learning_rate, POSITIVE, example=0.001)
    check_number("adam", "b1", b1, BETA, example=0.9)
    check_number("adam", "b2", b2, BETA, example=0.999)
    check_number("adam", "eps", eps, NON_NEGATIVE, example=1e-8)
    return optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)

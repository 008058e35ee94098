"""NAdamW: TaskSet's baseline Adam with Nesterov momentum, two kinds of weight decay and a
warmup + constant + cosine learning-rate schedule (Metz et al., arXiv 2002.11887)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from lopt.optimizers.schedules import warmup_cosine_schedule
from lopt.optimizers.validation import (
    BETA,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    check_bool,
    check_number,
    require_params,
)

__all__ = ["nadamw"]


def nadamw(
    learning_rate: ArrayLike,
    b1: ArrayLike = 0.9,
    b2: ArrayLike = 0.999,
    eps: ArrayLike = 1e-8,
    nesterov: bool | ArrayLike = True,
    adamw_weight_decay: ArrayLike = 0.0,
    l2_weight_decay: ArrayLike = 0.0,
    warmup_fraction: ArrayLike = 0.0,
    constant_fraction: ArrayLike = 1.0,
    min_learning_rate_mult: ArrayLike = 0.0,
    total_steps: ArrayLike | None = None,
) -> optax.GradientTransformation:
    """NAdamW, the baseline optimizer of TaskSet (arXiv 2002.11887).

    Follows ``NAdamWOptimizer._apply_dense`` of TaskSet (google-research
    ``task_set/optimizers/nadamw.py``) and its JAX port ``_nadamw_update`` in
    learned_optimization (``learned_optimization/optimizers/nadamw.py``). At update ``t`` (1 on
    the first update), with ``lr = schedule(t - 1)``:

    - ``g = grad + l2_weight_decay * param``;
    - ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g**2``;
    - ``lr_t = lr * sqrt(1 - b2**t) / (1 - b1**t)`` (bias corrections folded into the step
      size, so ``eps`` is added to ``sqrt(v)`` before correction, as in TF's Adam);
    - ``n = b1 m + (1 - b1) g`` if ``nesterov`` else ``n = m``;
    - ``update = -lr_t * (n / (sqrt(v) + eps) + adamw_weight_decay * param)`` (the decoupled
      decay is scaled by ``lr_t``, bias correction included, as in the source).

    The schedule is :func:`~lopt.optimizers.warmup_cosine_schedule`. Note: both reference
    implementations compute ``g = grad - l2_weight_decay * param``, which pushes params *away*
    from zero although they document it as "adding L2 loss"; we use ``+``, the documented
    intent (the gradient of ``l2_weight_decay / 2 * ||param||**2`` added to the loss).

    Args:
        learning_rate: peak learning rate, > 0.
        b1: decay of the gradient average, in [0, 1).
        b2: decay of the squared-gradient average, in [0, 1).
        eps: added to ``sqrt(v)``, >= 0.
        nesterov: use the Nesterov form. A bool, or a traced bool (it is applied with
            ``jnp.where``), so samples with and without it can share one ``jax.vmap``.
        adamw_weight_decay: decoupled (AdamW-style) weight decay, >= 0.
        l2_weight_decay: L2 weight decay added to the gradient before the moments, >= 0.
        warmup_fraction: fraction of ``total_steps`` of linear warmup from 0, in [0, 1].
        constant_fraction: fraction of ``total_steps`` before the cosine decay starts, in
            [0, 1]; 1 means no decay.
        min_learning_rate_mult: learning rate at the end of the decay, as a fraction of
            ``learning_rate``, in [0, 1].
        total_steps: the number of updates of the run, > 0. Needed unless the schedule is
            constant (``warmup_fraction=0`` and ``constant_fraction=1`` as concrete numbers).

    Returns:
        An ``optax.GradientTransformation`` whose state is ``optax.ScaleByAdamState`` and whose
        ``update`` needs ``params``.

    Raises:
        TypeError, ValueError: for a hyperparameter of the wrong type or range, or a schedule
            without ``total_steps``.

    Example:
        >>> import jax.numpy as jnp
        >>> opt = nadamw(learning_rate=1e-3, adamw_weight_decay=1e-4, warmup_fraction=0.01,
        ...              constant_fraction=0.5, total_steps=1000)
        >>> params = {"w": jnp.ones(3)}
        >>> state = opt.init(params)
        >>> updates, state = opt.update({"w": jnp.ones(3)}, state, params)
        >>> bool((updates["w"] == 0).all())  # the warmup starts from a learning rate of 0
        True
    """
    name = "nadamw"
    check_number(name, "learning_rate", learning_rate, POSITIVE, example=0.001)
    check_number(name, "b1", b1, BETA, example=0.9)
    check_number(name, "b2", b2, BETA, example=0.999)
    check_number(name, "eps", eps, NON_NEGATIVE, example=1e-8)
    check_bool(name, "nesterov", nesterov, traceable=True)
    check_number(name, "adamw_weight_decay", adamw_weight_decay, NON_NEGATIVE, example=1e-4)
    check_number(name, "l2_weight_decay", l2_weight_decay, NON_NEGATIVE, example=1e-4)
    warmup = check_number(name, "warmup_fraction", warmup_fraction, FRACTION, example=0.05)
    constant = check_number(name, "constant_fraction", constant_fraction, FRACTION, example=0.5)
    check_number(name, "min_learning_rate_mult", min_learning_rate_mult, FRACTION, example=0.0)

    if total_steps is None:
        if warmup != 0.0 or constant != 1.0:  # None (traced) counts as "may be active"
            shown = ", ".join(
                f"{k}={'<traced>' if v is None else v}"
                for k, v in (("warmup_fraction", warmup), ("constant_fraction", constant))
            )
            raise ValueError(
                f"{name}: {shown} may make a schedule over the run, so total_steps is needed; "
                "pass total_steps=<number of updates>, or warmup_fraction=0.0 and "
                "constant_fraction=1.0 for a constant learning rate."
            )
        schedule = optax.constant_schedule(learning_rate)
    else:
        check_number(name, "total_steps", total_steps, POSITIVE, example=10000)
        schedule = warmup_cosine_schedule(
            learning_rate, total_steps, warmup_fraction, constant_fraction, min_learning_rate_mult
        )

    def init(params: Any) -> optax.ScaleByAdamState:
        return optax.scale_by_adam().init(params)  # count, mu, nu: separate buffers (donatable)

    def update(
        grads: Any, state: optax.ScaleByAdamState, params: Any = None
    ) -> tuple[Any, optax.ScaleByAdamState]:
        require_params(name, params, "for the weight decays")
        t = (state.count + 1).astype(jnp.float32)
        lr_t = schedule(state.count) * jnp.sqrt(1.0 - b2**t) / (1.0 - b1**t)

        tree = jax.tree.map
        grads = tree(lambda g, p: g + l2_weight_decay * p, grads, params)
        mu = tree(lambda m, g: (b1 * m + (1.0 - b1) * g).astype(m.dtype), state.mu, grads)
        nu = tree(lambda v, g: (b2 * v + (1.0 - b2) * g * g).astype(v.dtype), state.nu, grads)

        def step(m, v, g, p):
            n = jnp.where(nesterov, b1 * m + (1.0 - b1) * g, m)
            return (-lr_t * (n / (jnp.sqrt(v) + eps) + adamw_weight_decay * p)).astype(p.dtype)

        updates = tree(step, mu, nu, grads, params)
        return updates, optax.ScaleByAdamState(optax.safe_increment(state.count), mu, nu)

    return optax.GradientTransformation(init, update)

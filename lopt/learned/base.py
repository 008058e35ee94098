"""The learned-optimizer protocol: ``init(key) -> theta``, ``optimizer(theta) -> optax``.

A :class:`LearnedOptimizer` is a small frozen (hashable) dataclass holding an
architecture's static configuration. All arrays live in ``theta`` (the meta-parameters)
and in the optimizer state, so the same object serves meta-training (``theta`` traced,
vmapped over tasks and perturbations, differentiated) and plain use in any optax loop::

    theta = lopt_.init(key)
    opt = lopt_.optimizer(theta, num_steps=T)      # optax.GradientTransformationExtraArgs
    state = opt.init(params)
    updates, state = opt.update(grads, state, params, loss=loss)
    params = optax.apply_updates(params, updates)

Extra args: ``loss`` (the training loss, a scalar) is required by architectures that read
it (:attr:`LearnedOptimizer.needs_loss`); ``valid_loss`` is read by those with
:attr:`LearnedOptimizer.reads_valid_loss`; any other keyword is ignored, so the
transformation composes with ``optax.chain``, ``optax.MultiSteps`` and
``optax.apply_if_finite``. Accumulators are float32; updates come back in each
parameter's dtype (the gradient's when ``params`` is not given).

Non-finite values are contained: update entries that come out NaN or infinite (from a NaN
in a gradient, a NaN loss or a blown-up network output) are zeroed and non-finite state
entries keep their old value (:func:`mask_non_finite`), so nothing non-finite reaches
``params`` or the optimizer state; the entries the damage reached do not move that step.

Subclasses implement :meth:`LearnedOptimizer.init` and
:meth:`LearnedOptimizer._build`, and declare ``name`` and the ``needs_*`` flags.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt import checkpoint

__all__ = ["LearnedOptimizer", "Transform", "mask_non_finite", "reads_valid_loss"]

Array = jax.Array
PyTree = Any
Theta = Any


class Transform(NamedTuple):
    """What an architecture builds from theta: plain ``init`` and ``update`` functions.

    ``update(grads, state, params, loss, valid_loss) -> (updates, state)`` receives
    validated arguments: ``params`` is not ``None`` when the architecture needs it,
    ``loss``/``valid_loss`` are float32 scalars or ``None``; ``grads`` may be any float
    dtype. It returns updates in float32 or the final dtype (the wrapper casts).

    ``masked=True`` says that ``update`` already returns what :func:`mask_non_finite` would
    make of its result, so the wrapper does not apply it again. A fused kernel (``lopt.kernels``)
    masks inside its own pass: XLA cannot fuse the mask into a custom call, and a separate
    masking pass re-reads and re-writes the whole state (it doubled ``nominal``'s fused step at
    100M parameters on the H200).
    """

    init: Callable[[PyTree], PyTree]
    update: Callable[..., tuple[PyTree, PyTree]]
    masked: bool = False


@functools.lru_cache(maxsize=256)
def _theta_spec(lopt: LearnedOptimizer) -> Any:
    return jax.eval_shape(lopt.init, jax.random.key(0))


def _scalar(name: str, value: Any, lopt_name: str) -> Array | None:
    if value is None:
        return None
    if not isinstance(value, (int, float, np.ndarray, np.generic, jax.Array)):
        raise TypeError(
            f"`{lopt_name}` got {name}={value!r} of type {type(value).__name__}; pass the "
            f"{name} as a scalar number or array."
        )
    if jnp.shape(value) != ():
        raise ValueError(
            f"`{lopt_name}` got {name} with shape {jnp.shape(value)}; pass the mean {name} "
            f"as a scalar (e.g. `{name}=jnp.mean(per_example_{name})`)."
        )
    return jnp.asarray(value, jnp.float32)


def _cast_like(updates: PyTree, like: PyTree) -> PyTree:
    return jax.tree.map(lambda u, p: u.astype(jnp.result_type(p)), updates, like)


def keep_finite(new: Array, old: Array) -> Array:
    """``new``, with ``old`` where ``new`` is NaN or infinite; ``old`` is a constant for
    differentiation. In ``new``'s dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> keep_finite(jnp.array([2.0, jnp.nan, jnp.inf]), jnp.array([1.0, 1.0, 1.0])).tolist()
        [2.0, 1.0, 1.0]
    """
    return jnp.where(jnp.isfinite(new), new, jax.lax.stop_gradient(old)).astype(jnp.result_type(new))


def mask_non_finite(updates: PyTree, new_state: PyTree, old_state: PyTree) -> tuple[PyTree, PyTree]:
    """Zero every NaN or infinite update entry and keep the old value of every non-finite state entry.

    Every learned optimizer's step goes through this, so a non-finite input (a NaN in a
    gradient, a NaN loss) or a blown-up network output never reaches ``params`` nor the
    optimizer state: the damage stays in the entries it reached, which do not move this step
    (one NaN gradient entry costs one parameter one step; a feature shared by a whole tensor,
    e.g. a per-tensor normalisation, or a NaN loss that reaches every entry, holds the whole
    tensor or step). Integer state (step counters) advances. Purely elementwise, so it fuses into
    the step's own kernels; finite entries, and gradients with respect to theta through them,
    are exactly those of the unmasked step.

    Example:
        >>> import jax.numpy as jnp
        >>> updates, state = mask_non_finite({"w": jnp.array([1.0, jnp.nan])}, jnp.array([2.0, jnp.inf]),
        ...                                  jnp.array([1.0, 1.0]))
        >>> updates["w"].tolist(), state.tolist()
        ([1.0, 0.0], [2.0, 1.0])
    """
    updates = jax.tree.map(lambda u: jnp.where(jnp.isfinite(u), u, jnp.zeros_like(u)), updates)

    # Parts the step passes through unchanged, and integer parts, stay untouched: a select on a
    # passed-through part would make a constant part of a scanned state depend on theta for
    # differentiation, and the NaN cotangents of features masked off inside the step (e.g.
    # `hierarchical`'s valid-loss features before any valid loss) would then reach theta's
    # gradient. A kept old entry is a constant for differentiation.
    def keep(new: Array, old: Array) -> Array:
        if new is old or not jnp.issubdtype(jnp.result_type(new), jnp.inexact):
            return new
        return keep_finite(new, old)

    return updates, jax.tree.map(keep, new_state, old_state)


class _ValidLossReader(optax.GradientTransformationExtraArgs):
    """The optax transformation of a learned optimizer that reads ``valid_loss`` (a marker type).

    :func:`reads_valid_loss` looks for the class attribute, not the class: a module imported twice
    (pytest's importlib mode collecting this file's doctests) makes two classes of one name.
    """

    __slots__ = ()
    lopt_reads_valid_loss = True


def reads_valid_loss(optimizer: Any) -> bool:
    """Whether ``optimizer`` (built by :meth:`LearnedOptimizer.optimizer`) reads ``valid_loss=``.

    :func:`lopt.inner.train` (and every path built on it) computes a validation loss each step
    for such optimizers, as meta-training does. An optimizer wrapped by another transformation
    (``optax.chain``...) loses the mark: pass ``valid_loss=True`` to :func:`lopt.inner.train`.

    Example:
        >>> import jax, optax, lopt
        >>> hierarchical = lopt.learned.get("hierarchical")
        >>> reads_valid_loss(hierarchical.optimizer(hierarchical.init(jax.random.key(0)), num_steps=10))
        True
        >>> reads_valid_loss(optax.adam(1e-3))
        False
    """
    return getattr(type(optimizer), "lopt_reads_valid_loss", False) is True


@dataclasses.dataclass(frozen=True)
class LearnedOptimizer(abc.ABC):
    """Base class of learned optimizers: a hashable config that turns theta into optax.

    Class attributes (set by each architecture):
        name: registry name (``"mlp"``, ``"hyper"``...).
        needs_loss: ``update`` requires the training loss as ``loss=``.
        needs_params: ``update`` requires the current ``params``.
        needs_num_steps: :meth:`optimizer` requires ``num_steps`` (the horizon).
        reads_valid_loss: ``update`` uses ``valid_loss=`` when given.

    Example:
        >>> import jax, jax.numpy as jnp, optax
        >>> import lopt.learned
        >>> lopt_ = lopt.learned.get("learnable_adam")
        >>> theta = lopt_.init(jax.random.key(0))
        >>> opt = lopt_.optimizer(theta)
        >>> params = {"w": jnp.ones(3)}
        >>> state = opt.init(params)
        >>> updates, state = opt.update(params, state, params, loss=1.0)
        >>> params = optax.apply_updates(params, updates)
    """

    name: ClassVar[str] = ""
    needs_loss: ClassVar[bool] = False
    needs_params: ClassVar[bool] = False
    needs_num_steps: ClassVar[bool] = False
    reads_valid_loss: ClassVar[bool] = False
    #: Fields that choose how the update is computed, not what it is (e.g. a program layout):
    #: left out of :meth:`config`, so theta files and warm starts match whatever they are set to.
    execution_options: ClassVar[tuple[str, ...]] = ()

    # -- to implement -------------------------------------------------------------------

    @abc.abstractmethod
    def init(self, key: Array) -> Theta:
        """Samples initial meta-parameters ``theta`` (a pytree of float32 arrays).

        Args:
            key: PRNG key (``jax.random.key`` or a legacy uint32 key).

        Returns:
            theta.
        """

    @abc.abstractmethod
    def _build(self, theta: Theta, num_steps: Array | None) -> Transform:
        """Returns the init/update functions for a validated ``theta``."""

    # -- public -------------------------------------------------------------------------

    def requires_num_steps(self) -> bool:
        """Whether :meth:`optimizer` needs ``num_steps`` for this configuration."""
        return self.needs_num_steps

    def optimizer(
        self, theta: Theta, *, num_steps: int | Array | None = None
    ) -> optax.GradientTransformationExtraArgs:
        """Builds the optax transformation for meta-parameters ``theta``.

        Args:
            theta: meta-parameters, structured like ``self.init(key)``; may be traced
                (jit, vmap, grad).
            num_steps: the horizon (number of training steps), an int or a scalar array
                (may be traced). Required when :meth:`requires_num_steps`; otherwise
                ignored.

        Returns:
            An ``optax.GradientTransformationExtraArgs`` whose update is
            ``update(grads, state, params=None, *, loss=None, valid_loss=None, **extra)``.

        Raises:
            ValueError: ``theta`` does not match this architecture (the message names the
                first leaf that differs), or ``num_steps`` is missing or invalid.
        """
        self.check_theta(theta)
        num_steps = self._check_num_steps(num_steps)
        impl = self._build(theta, num_steps)
        name = self.name

        def init_fn(params: PyTree) -> PyTree:
            return impl.init(params)

        def update_fn(
            updates: PyTree,
            state: PyTree,
            params: PyTree | None = None,
            *,
            loss: Any = None,
            valid_loss: Any = None,
            **extra: Any,
        ) -> tuple[PyTree, PyTree]:
            del extra  # other transformations' extra args
            if self.needs_params and params is None:
                raise TypeError(
                    f"the `{name}` learned optimizer reads the parameter values: pass "
                    "them as the third argument, e.g. "
                    "`opt.update(grads, state, params, loss=loss)`."
                )
            if self.needs_loss and loss is None:
                raise TypeError(
                    f"the `{name}` learned optimizer needs the training loss as the extra "
                    "arg `loss`: call `opt.update(grads, state, params, loss=loss)` (also "
                    "through optax.chain / MultiSteps / apply_if_finite)."
                )
            loss = _scalar("loss", loss, name)
            valid_loss = _scalar("valid_loss", valid_loss, name) if self.reads_valid_loss else None
            if params is not None:
                problem = checkpoint.tree_mismatch(updates, params, check_dtype=False)
                if problem is not None:
                    raise ValueError(
                        f"`{name}`: grads and params differ: {problem}. Pass grads with the "
                        "same structure and shapes as params."
                    )
            new_updates, new_state = impl.update(updates, state, params, loss, valid_loss)
            if not impl.masked:
                new_updates, new_state = mask_non_finite(new_updates, new_state, state)
            return _cast_like(new_updates, updates if params is None else params), new_state

        kind = _ValidLossReader if self.reads_valid_loss else optax.GradientTransformationExtraArgs
        return kind(init_fn, update_fn)

    def theta_spec(self) -> PyTree:
        """Shapes and dtypes of theta, as a pytree of ``jax.ShapeDtypeStruct``.

        Example:
            >>> import lopt.learned
            >>> spec = lopt.learned.get("learnable_sgdm").theta_spec()
            >>> sorted(spec)
            ['log_lr', 'logit_momentum']
        """
        return _theta_spec(self)

    def check_theta(self, theta: Theta) -> None:
        """Raises ``ValueError`` naming the first leaf where ``theta`` does not fit.

        Checks tree structure and leaf shapes (dtypes may differ, e.g. float64 under x64).
        Works on traced values (inside jit/vmap/grad, a leaf's shape excludes vmapped axes).
        """
        problem = checkpoint.tree_mismatch(theta, self.theta_spec(), check_dtype=False)
        if problem is not None:
            raise ValueError(
                f"theta does not match the `{self.name}` learned optimizer with config "
                f"{self.config()}: {problem}. Create theta with `init(key)` of the same "
                "architecture and config, or load it with `lopt.learned.load_theta`."
            )
        for leaf in jax.tree.leaves(theta):
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
                raise ValueError(
                    f"theta leaves must be floating point; got {jnp.result_type(leaf)}."
                )

    def config(self) -> dict[str, Any]:
        """The configuration as a JSON-serialisable dict (tuples become lists).

        Example:
            >>> import lopt.learned
            >>> lopt.learned.get("learnable_sgdm").config()
            {'lr': 0.01, 'momentum': 0.9}
        """
        out = {}
        for f in dataclasses.fields(self):
            if f.name in self.execution_options:
                continue
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def with_execution_options(self, **options: Any) -> LearnedOptimizer:
        """This config with execution options changed (they are not part of :meth:`config`, so the
        same theta serves either; e.g. ``state_dtype``).

        Raises:
            ValueError: a name that is not one of this architecture's :attr:`execution_options`.

        Example:
            >>> import lopt.learned
            >>> lopt.learned.get("nominal").with_execution_options(state_dtype="bfloat16").state_dtype
            'bfloat16'
        """
        for name in options:
            if name not in self.execution_options:
                raise ValueError(f"{type(self).__name__}: {name!r} is not an execution option of {self.name!r}; "
                                 f"it has {list(self.execution_options)}.")
        return dataclasses.replace(self, **options)

    # -- helpers for subclasses ----------------------------------------------------------

    def _check_kernel_option(self) -> None:
        """Checks the ``kernel`` execution option of an architecture with a fused kernel."""
        if self.kernel is not None:  # lazy: lopt.kernels imports lopt.learned
            from lopt.kernels.select import check_option

            check_option(type(self).__name__, self.kernel)

    def _check_num_steps(self, num_steps: Any) -> Array | None:
        if num_steps is None:
            if self.requires_num_steps():
                raise ValueError(
                    f"the `{self.name}` learned optimizer needs the horizon: call "
                    f"`{self.name}.optimizer(theta, num_steps=T)` with T the number of "
                    "training steps."
                )
            return None
        if isinstance(num_steps, bool) or not isinstance(
            num_steps, (int, float, np.ndarray, np.generic, jax.Array)
        ):
            raise TypeError(f"num_steps={num_steps!r} must be a positive int or a scalar array.")
        if jnp.shape(num_steps) != ():
            raise ValueError(
                f"num_steps must be a scalar, got shape {jnp.shape(num_steps)}; vmap over "
                "tasks to use several horizons."
            )
        if isinstance(num_steps, (int, float)) and num_steps < 1:
            raise ValueError(f"num_steps={num_steps} must be at least 1.")
        return jnp.asarray(num_steps, jnp.float32)


# -- config validation used by the architectures ---------------------------------------


def check_positive_int(owner: str, field: str, value: Any) -> None:
    """Raises if ``value`` is not a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {field}={value!r} must be a positive int.")


def check_positive(owner: str, field: str, value: Any) -> None:
    """Raises if ``value`` is not a positive number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{owner}: {field}={value!r} must be a positive number.")


def as_decays(owner: str, field: str, value: Any, *, allow_empty: bool = False) -> tuple:
    """Validates a sequence of decays in [0, 1) and returns it as a tuple of floats."""
    try:
        out = tuple(float(v) for v in value)
    except TypeError:
        raise ValueError(
            f"{owner}: {field}={value!r} must be a sequence of decays in [0, 1)."
        ) from None
    if (not out and not allow_empty) or not all(0.0 <= d < 1.0 for d in out):
        raise ValueError(f"{owner}: {field}={value!r} must be a sequence of decays in [0, 1).")
    return out


def set_field(obj: Any, field: str, value: Any) -> None:
    """Sets a field of a frozen dataclass (for normalisation in ``__post_init__``)."""
    object.__setattr__(obj, field, value)

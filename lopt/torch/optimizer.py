"""``lopt.torch.LearnedOptimizer``: a lopt learned optimizer as a ``torch.optim.Optimizer``.

It reads the same theta file as the JAX side and takes the same steps: for the same
params, gradients (and losses) and theta, its parameters follow the JAX trajectory to
float32 rounding (``tests/torch/test_equal_trajectories.py``). There is no learning rate.

Example:
    >>> import jax, torch
    >>> import lopt.learned, lopt.torch
    >>> lopt_ = lopt.learned.get("mlp")
    >>> model = torch.nn.Linear(4, 2)
    >>> opt = lopt.torch.LearnedOptimizer(model.parameters(), (lopt_.init(jax.random.key(0)), lopt_))
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = model(torch.ones(3, 4)).square().mean()
    ...     loss.backward()
    ...     return loss
    >>> loss = opt.step(closure)
    >>> opt.state[model.weight]["step"], tuple(opt.state[model.weight]["momentum"].shape)
    (1, (2, 4, 6))
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable
from typing import Any

import torch

from lopt.torch import architectures
from lopt.torch.source import resolve_theta

__all__ = ["LearnedOptimizer"]

_LR_KEYS = ("lr", "learning_rate", "step_size")
_GROUP_KEYS = ("params", "num_steps")


def _check_num_steps(num_steps: Any) -> int | None:
    if num_steps is None:
        return None
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(
            f"num_steps={num_steps!r} must be a positive int: the number of optimizer steps "
            "you will train for."
        )
    return num_steps


def _loss_tensor(loss: Any, device: torch.device) -> torch.Tensor:
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise ValueError(
                f"loss has shape {tuple(loss.shape)}; pass the mean training loss as a scalar "
                "(e.g. `loss=per_example_loss.mean()`)."
            )
        return loss.detach().reshape(()).to(device=device, dtype=torch.float32)
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        return torch.tensor(float(loss), dtype=torch.float32, device=device)
    raise TypeError(
        f"loss={loss!r} of type {type(loss).__name__}; pass the training loss as a number or "
        "a one-element tensor."
    )


def _all_finite(grads: list[torch.Tensor], loss: torch.Tensor | None) -> bool:
    """Whether every gradient entry (and the loss) is finite: one fused norm per tensor and one
    host read. A norm that overflows on finite gradients (float16 past 65504) only costs the
    masked path; ``_foreach_norm`` takes no ``dtype`` before PyTorch 2.3."""
    total = torch.stack([n.float() for n in torch._foreach_norm(grads)]).sum()
    if loss is not None:
        total = total + loss * 0.0
    return bool(torch.isfinite(total))


def _copy_state(states: list[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
    """Copies of the floating-point state tensors, to restore the entries a step makes non-finite."""
    return [{k: v.clone() for k, v in s.items() if isinstance(v, torch.Tensor) and v.is_floating_point()}
            for s in states]


def _restore_non_finite(states: list[dict[str, Any]], kept: list[dict[str, torch.Tensor]]) -> None:
    """Puts back the old value of every state entry the step made NaN or infinite (as JAX does)."""
    for state, old in zip(states, kept):
        for key, before in old.items():
            new = state[key]
            new.copy_(torch.where(torch.isfinite(new), new, before))


class LearnedOptimizer(torch.optim.Optimizer):
    """A lopt learned optimizer for PyTorch models, with no hyperparameters to tune.

    Args:
        params: an iterable of tensors or of param-group dicts (as for any
            ``torch.optim.Optimizer``); a group may set its own ``num_steps``.
        theta: where the meta-parameters come from: the path of a theta file written by
            :func:`lopt.learned.save_theta` (or a ``lopt train`` run folder), the name of a
            pretrained optimizer (:func:`lopt.pretrained.names`, e.g. ``"default"``), or the
            pair ``(theta, learned_optimizer)`` that :func:`lopt.learned.load_theta`
            returns.
        num_steps: the number of steps you will train for; required by architectures that
            read the fraction of training done (a learned schedule), ignored by the others.
        compile: run the per-parameter network through ``torch.compile`` (``nominal`` and
            ``mlp``; the others are already a few ``torch._foreach_*`` kernels): features,
            network, state and update fuse into one loop over the parameters. The first
            steps compile (seconds to a minute); results equal the eager step's to float32
            rounding. Where compiling is impossible the optimizer warns
            (``RuntimeWarning``, with the reason) and steps eagerly.
        state_dtype: ``"bfloat16"`` to keep the accumulators of a ``nominal`` or ``mlp`` theta
            in bfloat16 (half the optimizer memory; rounded stochastically, as
            ``lopt.pretrained.optimizer(state_dtype="bfloat16")`` does in JAX), ``"float32"``,
            or ``None``: what the theta's architecture says (float32 unless it was given as
            ``(theta, arch.with_execution_options(state_dtype=...))``).

    Attributes:
        architecture: the JAX learned optimizer (its registry name and config).

    Raises:
        TypeError: a learning rate (or any other unknown option) was passed.
        ValueError: the theta file does not fit its architecture, the architecture has no
            PyTorch port, the pretrained name is unknown, or ``num_steps`` is missing or
            invalid.

    Step with ``opt.step()`` after ``loss.backward()``, or ``opt.step(closure)`` with a
    closure that zeroes the gradients, computes the loss, calls ``backward`` and returns the
    loss. Architectures that read the training loss take it from the closure or from
    ``opt.step(loss=loss)``. Accumulators are float32 whatever the parameters' dtype
    (float32, bfloat16, float16), or bfloat16 for a ``nominal`` or ``mlp`` theta with
    ``state_dtype="bfloat16"`` (rounded stochastically, with the bits JAX uses; the random bits
    are salted with each parameter's position among all of the optimizer's parameters, which is
    its leaf index in JAX when the parameters are given in the order of JAX's tree leaves); the
    update is cast to each parameter's dtype and added. A step with a NaN or infinite gradient
    (or loss) leaves every state entry it would make non-finite at its old value, and non-finite
    update entries are zero, as in JAX.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        theta: Any,
        *,
        num_steps: int | None = None,
        compile: bool = False,
        state_dtype: str | None = None,
        **options: Any,
    ):
        self._reject_options(options, "LearnedOptimizer(...)")
        if not isinstance(compile, bool):
            raise TypeError(f"compile={compile!r} must be True or False.")
        arch, theta_tree = resolve_theta(theta)
        if state_dtype is not None:  # checked there: the name is an option of this architecture, the value
            arch = arch.with_execution_options(state_dtype=state_dtype)
        self.architecture = arch
        self._port = architectures.get(arch.name)(arch, theta_tree)
        if compile:
            self._port.use_compile()
        super().__init__(params, {"num_steps": _check_num_steps(num_steps)})

    # -- validation ----------------------------------------------------------------------

    def _reject_options(self, options: dict[str, Any], where: str) -> None:
        for key, value in options.items():
            if key in _LR_KEYS:
                raise TypeError(
                    f"{where} got {key}={value!r}, but a learned optimizer has no "
                    "learning rate: it was meta-trained to choose its own step sizes. Remove "
                    f"`{key}` (and any LR scheduler); pass `num_steps=` the training length instead."
                )
        if options:
            raise TypeError(
                f"{where} got unexpected option(s) {sorted(options)}; a learned optimizer "
                "takes only `num_steps` (per group or for all)."
            )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds a group of parameters (it may set ``num_steps``; nothing else is tunable)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}.")
        extra = {k: v for k, v in param_group.items() if k not in _GROUP_KEYS}
        self._reject_options(extra, "a param group")
        param_group = dict(param_group)
        if "num_steps" in param_group:
            param_group["num_steps"] = _check_num_steps(param_group["num_steps"])
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if self._port.needs_num_steps() and group["num_steps"] is None:
            raise ValueError(
                f"the `{self.architecture.name}` learned optimizer reads the fraction of "
                "training done: pass `num_steps=` (the number of steps you will train for) to "
                "LearnedOptimizer, or set it in each param group."
            )
        for p in group["params"]:
            if p.dtype not in (torch.float32, torch.bfloat16, torch.float16):
                raise TypeError(f"parameters must be float32, bfloat16 or float16 (the optimizer computes in "
                                f"float32); got one of dtype {p.dtype} and shape {tuple(p.shape)}. Cast the "
                                "model (e.g. `model.float()`) before building the optimizer.")

    # -- stepping ------------------------------------------------------------------------

    @torch.no_grad()
    def step(
        self, closure: Callable[[], Any] | None = None, *, loss: Any = None
    ) -> Any:
        """Updates every parameter that has a gradient.

        Args:
            closure: optional callable that zeroes the gradients, computes the loss, calls
                ``backward()`` and returns the loss.
            loss: the training loss of this step (a number or a one-element tensor), for
                architectures that read it, when there is no closure.

        Returns:
            The closure's loss (or the ``loss`` given, or ``None``).

        Raises:
            TypeError: the architecture reads the loss and none was given; a sparse gradient.
            ValueError: both ``closure`` and ``loss`` were given.
        """
        if closure is not None:
            if loss is not None:
                raise ValueError("pass either a closure or loss=, not both.")
            with torch.enable_grad():
                loss = closure()
        needs_loss = self._port.needs_loss
        if needs_loss and loss is None:
            raise TypeError(
                f"the `{self.architecture.name}` learned optimizer reads the training loss: call "
                "`opt.step(closure)` with a closure returning the loss, or `opt.step(loss=loss)`."
            )
        # each parameter's position among all of them: the salt of bfloat16 state's rounding
        position = None
        if self._port.state_dtype != torch.float32:
            position = {id(p): i for i, p in enumerate(itertools.chain.from_iterable(
                g["params"] for g in self.param_groups))}
        for group in self.param_groups:
            buckets: dict[tuple[torch.device, int], list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise TypeError("lopt.torch.LearnedOptimizer does not support sparse gradients.")
                state = self.state[p]
                if not state:
                    state.update(self._port.init_state(p))
                    state["step"] = 0
                buckets.setdefault((p.device, state["step"]), []).append(p)
            for (device, count), params in buckets.items():
                states = [self.state[p] for p in params]
                grads = [p.grad for p in params]
                loss_t = _loss_tensor(loss, device) if needs_loss else None
                # JAX masks every step (lopt.learned.base.mask_non_finite). A port whose state writes
                # mask themselves needs nothing more; for the others one reduction, read on the host,
                # decides whether this step needs it, and only then is the state copied
                kept = None
                if not self._port.masks_state and not _all_finite(grads, loss_t):
                    kept = _copy_state(states)
                updates = self._port.update(
                    params, grads, states, count, loss_t, group["num_steps"],
                    positions=None if position is None else [position[id(p)] for p in params],
                )
                if kept is not None:
                    _restore_non_finite(states, kept)
                if not self._port.finite_updates:  # a blown-up network output is no step either
                    for u in updates:
                        u.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
                updates = [u.to(p.dtype) for u, p in zip(updates, params)]
                torch._foreach_add_(params, updates)
                for state in states:
                    state["step"] = count + 1
        return loss

    # -- checkpoints ---------------------------------------------------------------------

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores a :meth:`state_dict`, keeping the accumulators in their own dtype.

        ``torch.optim.Optimizer`` casts loaded state to each parameter's dtype; the learned
        optimizer's accumulators keep the dtype its architecture stores them in (float32, or
        bfloat16 with ``state_dtype="bfloat16"``, as the JAX state does), so a bfloat16 model
        resumes exactly where it stopped.

        Raises:
            ValueError: the state dict comes from a different architecture (its per-parameter
                state has other accumulators).
        """
        saved_ids = itertools.chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = itertools.chain.from_iterable(g["params"] for g in self.param_groups)
        pairs = [(i, p) for i, p in zip(saved_ids, params) if i in state_dict["state"]]
        dtypes = {}
        for index, p in pairs:
            fresh = self._port.init_state(torch.empty(p.shape, device="meta"))
            dtypes[index] = {key: value.dtype for key, value in fresh.items()}
            expected = set(fresh) | {"step"}
            saved = state_dict["state"][index]
            if set(saved) != expected:
                raise ValueError(
                    f"state_dict entry {index} has state {sorted(saved)}, but the "
                    f"`{self.architecture.name}` learned optimizer keeps {sorted(expected)} for a "
                    f"parameter of shape {tuple(p.shape)}; load a state dict saved by a "
                    "LearnedOptimizer with the same theta file and the same parameters."
                )
        saved_state = copy.copy(state_dict["state"])
        super().load_state_dict(state_dict)
        for index, p in pairs:
            for key, value in saved_state[index].items():
                if key != "step":
                    self.state[p][key] = value.to(device=p.device, dtype=dtypes[index][key], copy=True)

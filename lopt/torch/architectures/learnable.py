"""PyTorch ports of ``learnable_adam`` and ``learnable_sgdm`` (:mod:`lopt.learned.learnable`).

Hand-designed rules whose hyperparameters come from theta; the elementwise work runs as
``torch._foreach_*`` kernels over all tensors. ``learnable_adam`` takes its hyperparameters
as Python floats (computed once from theta, no host synchronisation per step) so each kernel
fuses its scalar multiply; ``learnable_sgdm`` as 0-d float32 tensors on the device.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from lopt.torch.architectures.base import Port

__all__ = ["LearnableAdamPort", "LearnableSGDMPort"]

_f32 = torch.float32


def _zeros_f32(param: torch.Tensor) -> torch.Tensor:
    return torch.zeros(param.shape, dtype=_f32, device=param.device)


def _as_f32(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [t if t.dtype == _f32 else t.to(_f32) for t in tensors]


class LearnableAdamPort(Port):
    """``learnable_adam``: Adam with log-lr, logit-betas and log-eps from theta."""

    name: ClassVar[str] = "learnable_adam"

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mu": _zeros_f32(param), "nu": _zeros_f32(param)}

    def _hyperparameters(self) -> tuple[float, ...]:
        """``(lr, b1, 1 - b1, b2, 1 - b2, eps)`` from theta, float32 values as Python floats.

        Computed once on the CPU: theta is fixed, and scalar arguments let each
        ``torch._foreach_*`` kernel fuse its multiply without reading a device tensor.
        """
        if not hasattr(self, "_hyper"):
            th = self.theta(torch.device("cpu"))
            values = (
                torch.exp(th["log_lr"]),
                torch.sigmoid(th["logit_b1"]),
                torch.sigmoid(-th["logit_b1"]),
                torch.sigmoid(th["logit_b2"]),
                torch.sigmoid(-th["logit_b2"]),
                torch.exp(th["log_eps"]),
            )
            self._hyper = tuple(float(v) for v in values)
        return self._hyper

    def update(self, params, grads, states, count, loss, num_steps, positions=None):
        del params, loss, num_steps, positions
        lr, b1, one_minus_b1, b2, one_minus_b2, eps = self._hyperparameters()
        g = _as_f32(grads)
        mu = [s["mu"] for s in states]
        nu = [s["nu"] for s in states]

        torch._foreach_mul_(mu, b1)
        torch._foreach_add_(mu, g, alpha=one_minus_b1)
        torch._foreach_mul_(nu, b2)
        torch._foreach_addcmul_(nu, g, g, value=one_minus_b2)

        t = torch.tensor(float(count + 1), dtype=_f32)  # bias corrections in float32, on the CPU
        c1 = float(1.0 - torch.tensor(b1, dtype=_f32) ** t)
        c2 = float(1.0 - torch.tensor(b2, dtype=_f32) ** t)
        den = torch._foreach_div(nu, c2)
        torch._foreach_sqrt_(den)
        torch._foreach_add_(den, eps)
        out = torch._foreach_div(mu, c1)
        torch._foreach_mul_(out, -lr)
        torch._foreach_div_(out, den)
        return out


class LearnableSGDMPort(Port):
    """``learnable_sgdm``: heavy-ball SGD with log-lr and logit-momentum from theta."""

    name: ClassVar[str] = "learnable_sgdm"

    def init_state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"trace": _zeros_f32(param)}

    def update(self, params, grads, states, count, loss, num_steps, positions=None):
        del params, count, loss, num_steps, positions
        th = self.theta(grads[0].device)
        lr = torch.exp(th["log_lr"])
        beta = torch.sigmoid(th["logit_momentum"])
        trace = [s["trace"] for s in states]
        torch._foreach_mul_(trace, beta)
        torch._foreach_add_(trace, _as_f32(grads))
        return torch._foreach_mul(trace, -lr)

"""lopt's learned optimizers for PyTorch (install with ``pip install lopt[torch]``).

:class:`LearnedOptimizer` is a ``torch.optim.Optimizer`` that reads the same theta files as
the JAX side (:func:`lopt.learned.save_theta`, the pretrained weights in
:mod:`lopt.pretrained`) and follows the same trajectories. The core ``lopt`` package never
imports torch; only this subpackage does.

Example:
    >>> import jax, torch
    >>> import lopt.learned, lopt.torch
    >>> lopt.torch.names()
    ('learnable_adam', 'learnable_sgdm', 'mlp', 'nominal')
    >>> lopt_ = lopt.learned.get("learnable_adam", lr=0.1)
    >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    >>> opt = lopt.torch.LearnedOptimizer([w], (lopt_.init(jax.random.key(0)), lopt_))
    >>> for _ in range(3):
    ...     opt.zero_grad()
    ...     w.square().sum().backward()
    ...     _ = opt.step()
    >>> [round(v, 3) for v in w.tolist()]
    [0.702, -1.701]
"""

try:
    import torch as _torch  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "lopt.torch needs PyTorch: install it with `pip install lopt[torch]` (or "
        "`pip install torch`)."
    ) from e

from lopt.torch import architectures, ops
from lopt.torch.architectures import names
from lopt.torch.optimizer import LearnedOptimizer
from lopt.torch.source import resolve_theta

__all__ = ["LearnedOptimizer", "architectures", "names", "ops", "resolve_theta"]

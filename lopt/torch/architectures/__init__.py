"""PyTorch ports of lopt's learned-optimizer architectures, by registry name.

Example:
    >>> from lopt.torch import architectures
    >>> "mlp" in architectures.names()
    True
"""

from __future__ import annotations

from lopt.torch.architectures.base import Port
from lopt.torch.architectures.learnable import LearnableAdamPort, LearnableSGDMPort
from lopt.torch.architectures.mlp import MLPPort
from lopt.torch.architectures.nominal import NominalPort

__all__ = ["Port", "get", "names"]

_PORTS: dict[str, type[Port]] = {
    cls.name: cls for cls in (MLPPort, NominalPort, LearnableAdamPort, LearnableSGDMPort)
}


def names() -> tuple[str, ...]:
    """Names of the architectures that have a PyTorch port, sorted."""
    return tuple(sorted(_PORTS))


def get(name: str) -> type[Port]:
    """The port class of architecture ``name``.

    Raises:
        ValueError: no PyTorch port of ``name`` (the message lists those there are).
    """
    if name not in _PORTS:
        raise ValueError(
            f"the learned optimizer architecture {name!r} has no PyTorch port; lopt.torch runs "
            f"{names()}. Use it from JAX (lopt.learned) or pick a theta of a ported architecture."
        )
    return _PORTS[name]

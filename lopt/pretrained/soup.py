"""Averaging the ends of several campaign lines that started from one theta (a "soup").

After a rewind the campaign can run several lines from the same theta (other outer learning
rates, other trainable subsets, other seeds). When each of them validates worse than the theta
they started from, their displacements may be mostly noise of the evolution-strategies gradient:
averaging the lines' ends keeps what they share and shrinks what they do not, by about the square
root of the number of lines if the noise is independent. :func:`average` writes that mean theta as
a theta file (digest-checked, the architecture and the sources in its header), which validation
scores like any other and ``--rewind`` can make the next warm start.

Usage::

    python -m lopt.pretrained.soup --out soup.safetensors campaign/thetas/theta-012627.safetensors \\
        campaign/thetas/theta-012776.safetensors ...
    python -m lopt.pretrained.validate soup.safetensors --steps 1000 2000 --variants 8 --seeds 2
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

__all__ = ["average", "main"]


def average(paths: Sequence[str], out: str, *, weights: Sequence[float] | None = None,
            overwrite: bool = False) -> dict[str, Any]:
    """Writes the (weighted) mean of the theta files ``paths`` to ``out``.

    Args:
        paths: two or more theta or warm-start files of one architecture and config (each digest
            is verified as it is read).
        out: the theta file to write.
        weights: one non-negative weight per file (normalised to sum 1); ``None``: equal.
        overwrite: replace an existing ``out`` (refused otherwise).

    Returns:
        ``{"out", "sources", "weights", "distances"}``: each source's Euclidean distance from the mean.

    Raises:
        ValueError: fewer than two files, weights of the wrong length, negative or all zero, files
            of different architectures or configs, or ``out`` exists without ``overwrite``.

    Example:
        >>> import jax, os, tempfile
        >>> from lopt.learned import NominalLOpt, save_theta, load_theta
        >>> arch, d = NominalLOpt(), tempfile.mkdtemp()
        >>> a, b = (os.path.join(d, f"{n}.safetensors") for n in "ab")
        >>> theta = arch.init(jax.random.key(0))
        >>> _ = save_theta(a, arch, theta)
        >>> _ = save_theta(b, arch, jax.tree.map(lambda x: x + 2.0, theta))
        >>> _ = average([a, b], os.path.join(d, "mean.safetensors"))
        >>> mean, _ = load_theta(os.path.join(d, "mean.safetensors"))
        >>> float(mean["log_lr"] - theta["log_lr"])
        1.0
    """
    from lopt.learned.serialization import save_theta
    from lopt.meta.warm_start import file_optimizer, load_warm_start

    if len(paths) < 2:
        raise ValueError(f"average needs two or more theta files, got {len(paths)}; pass the lines' ends.")
    if weights is None:
        weights = [1.0] * len(paths)
    w = np.asarray(weights, np.float64)
    if w.shape != (len(paths),) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError(f"weights={list(weights)!r}: give one non-negative weight per file ({len(paths)}), "
                         "not all zero.")
    if os.path.exists(out) and not overwrite:
        raise ValueError(f"{out} exists; choose another --out or pass overwrite=True (--overwrite).")
    w = w / w.sum()
    arch = file_optimizer(paths[0])
    thetas = []
    for path in paths:
        other = file_optimizer(path)
        if other.name != arch.name or other.config() != arch.config():
            raise ValueError(f"{path} holds `{other.name}` {other.config()}, but {paths[0]} holds `{arch.name}` "
                             f"{arch.config()}; average thetas of one architecture and config.")
        thetas.append(load_warm_start(path, arch)[0])
    mean = jax.tree.map(lambda *xs: sum(float(wi) * np.asarray(x, np.float64) for wi, x in zip(w, xs))
                        .astype(np.asarray(xs[0]).dtype), *thetas)
    distances = [float(np.sqrt(sum(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
                                   for a, b in zip(jax.tree.leaves(t), jax.tree.leaves(mean)))))
                 for t in thetas]
    sources = [os.path.basename(p) for p in paths]
    save_theta(out, arch, mean, extra={"soup_of": sources, "soup_weights": [float(x) for x in w]})
    return {"out": out, "sources": sources, "weights": [float(x) for x in w], "distances": distances}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lopt.pretrained.soup --out FILE THETA THETA ...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("thetas", nargs="+", help="theta or warm-start files of one architecture")
    parser.add_argument("--out", required=True, help="the mean theta file to write (refuses an existing one)")
    parser.add_argument("--weights", nargs="+", type=float, default=None, help="one weight per file (default equal)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    try:
        result = average(args.thetas, args.out, weights=args.weights, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError) as e:
        parser.error(str(e))
    for source, weight, distance in zip(result["sources"], result["weights"], result["distances"]):
        print(f"{source}: weight {weight:.3f}, distance from the mean {distance:.4g}")
    print("wrote", result["out"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

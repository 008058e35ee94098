"""A theta file with another config: the same weights under changed architecture options.

Some options of an architecture change how a theta is used without changing its shapes (for
``nominal``: ``relative_initial_distance``, ``update_clip``, ``unknown_horizon_fraction``...). To
try a trained theta under such an option, or to continue a campaign's line with it, write a new
file; the source is never modified. The new file's header keeps the source's ``extra`` (its
campaign step, for instance) and adds ``reconfigured_from`` (the source's digest and the changed
fields), so the change stays on record.

Usage::

    python -m lopt.learned.reconfigure campaign/best_theta.safetensors /tmp/best_relative.safetensors \\
        relative_initial_distance=1e-4

Values are read as JSON where they parse (``1e-4``, ``true``, ``[0.99, 0.999]``), else as strings.

Example:
    >>> import os, tempfile, jax
    >>> import lopt.learned
    >>> from lopt.learned.reconfigure import reconfigure
    >>> d = tempfile.mkdtemp()
    >>> nominal = lopt.learned.get("nominal", step_size="distance")
    >>> _ = lopt.learned.save_theta(os.path.join(d, "a.safetensors"), nominal, nominal.init(jax.random.key(0)))
    >>> _ = reconfigure(os.path.join(d, "a.safetensors"), os.path.join(d, "b.safetensors"),
    ...                 {"relative_initial_distance": 1e-4})
    >>> lopt.learned.load_theta(os.path.join(d, "b.safetensors"))[1].relative_initial_distance
    0.0001
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
from typing import Any

from lopt import checkpoint
from lopt.learned import registry
from lopt.learned.serialization import load_theta, save_theta

__all__ = ["parse_assignments", "reconfigure"]


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["a=1e-4", "b=true", "c=adam"]`` -> ``{"a": 0.0001, "b": True, "c": "adam"}``.

    Example:
        >>> parse_assignments(["relative_initial_distance=1e-4", "step_size=distance"])
        {'relative_initial_distance': 0.0001, 'step_size': 'distance'}
    """
    changes = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not FIELD=VALUE (e.g. relative_initial_distance=1e-4).")
        try:
            changes[key] = json.loads(raw)
        except json.JSONDecodeError:
            changes[key] = raw
    return changes


def reconfigure(source: str | os.PathLike, target: str | os.PathLike, changes: dict[str, Any]) -> pathlib.Path:
    """Writes ``source``'s theta to ``target`` under its config updated by ``changes``.

    Args:
        source: a theta file (digest-checked).
        target: the new file; must not exist (nothing is overwritten).
        changes: config fields and their new values.

    Returns:
        The path written.

    Raises:
        FileExistsError: ``target`` exists.
        ValueError: ``changes`` is empty, names a field the architecture does not have, or a value
            it rejects; or the changed config needs a theta of other shapes.
    """
    if os.path.exists(target):
        raise FileExistsError(f"{target} exists; choose another path (theta files are never overwritten).")
    if not changes:
        raise ValueError("reconfigure: no changes given; pass FIELD=VALUE pairs.")
    theta, lopt_ = load_theta(source)
    config = lopt_.config()
    unknown = sorted(set(changes) - set(config))
    if unknown:
        raise ValueError(f"{lopt_.name} has no config field {unknown[0]!r}; its fields: {sorted(config)}.")
    changed = registry.get(lopt_.name, **{**config, **changes})
    extra = dict(checkpoint.read_metadata(source).get("extra", {}))
    extra["reconfigured_from"] = {"digest": checkpoint.stored_digest(source), "changes": changes}
    try:  # save_theta checks theta against the changed config before it writes anything
        return save_theta(target, changed, theta, extra=extra)
    except ValueError as e:
        raise ValueError(f"the changes {changes} give {lopt_.name} a theta of other shapes than {source}'s; "
                         f"only options that keep theta's shapes can be changed ({e}).") from e


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", help="theta file to read")
    parser.add_argument("target", help="theta file to write (must not exist)")
    parser.add_argument("changes", nargs="+", metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    try:
        path = reconfigure(args.source, args.target, parse_assignments(args.changes))
    except (ValueError, FileExistsError) as e:
        parser.error(str(e))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

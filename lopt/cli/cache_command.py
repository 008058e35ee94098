"""``lopt cache``: what the set-up cache holds, and removing what the current code cannot use.

* ``lopt cache`` lists the folder's program, fit and set-up-worker entries (counts and sizes,
  current and stale, with why) without changing anything.
* ``lopt cache --prune`` removes the stale ones (files of other lopt sources or another JAX
  version, unreadable records, modules no record names); run it while no run is setting up.

Example:
    >>> import tempfile
    >>> from lopt.cli import main
    >>> main(["cache", "--dir", tempfile.mkdtemp()])  # doctest: +ELLIPSIS
    cache folder ...: no program, fit or set-up records
    0
"""

from __future__ import annotations

import argparse
import collections

from lopt.meta.cache_pruning import prune, scan
from lopt.meta.normalizer import default_cache_dir

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("cache", help="list the set-up cache (programs, fits) and prune what the code cannot use",
                            description="List the set-up cache's program, normaliser-fit and set-up-worker entries; "
                                        "with --prune, remove those the current lopt and JAX cannot read.")
    parser.add_argument("--dir", help="the cache folder (default: $LOPT_CACHE_DIR/normalizers or "
                                      "~/.cache/lopt/normalizers)")
    parser.add_argument("--prune", action="store_true", help="remove the stale entries (default: only list them)")
    parser.set_defaults(handler=run)


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def run(args: argparse.Namespace) -> int:
    folder = args.dir or str(default_cache_dir())
    entries = scan(folder)
    if not entries:
        print(f"cache folder {folder}: no program, fit or set-up records")
        return 0
    print(f"cache folder {folder}:")
    for kind in ("program", "fit", "prewarm"):
        mine = [e for e in entries if e.kind == kind]
        if not mine:
            continue
        current = [e for e in mine if not e.stale]
        stale = [e for e in mine if e.stale]
        reasons = collections.Counter(e.reason for e in stale)
        why = "; ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        print(f"  {kind:8s} {len(current):5d} current ({_mb(sum(e.bytes for e in current))}), {len(stale):5d} stale "
              f"({_mb(sum(e.bytes for e in stale))}){': ' + why if why else ''}")
    stale_bytes = sum(e.bytes for e in entries if e.stale)
    if args.prune:
        files, freed = prune(entries)
        print(f"removed {files} files ({_mb(freed)})")
    elif stale_bytes:
        print(f"lopt cache --prune{' --dir ' + args.dir if args.dir else ''} removes the stale entries "
              f"({_mb(stale_bytes)})")
    return 0

"""Packs the most useful part of a compilation-cache folder into one archive under a size budget.

    python scripts/pack_cache.py CACHE_DIR ARCHIVE.tgz --budget-mib 24 [--newer-than FILE]

A campaign session returns its caches (XLA's executables and autotuning results, lopt's normaliser
fits and program records) for the next call to carry, but a call carries at most 64 MiB with the
data beside them, so ~24 MiB of cache: on 27 structures the whole cache is larger. This script
chooses what goes back: the files written after ``--newer-than`` (this session's: the current
code's) before older ones, and within each group the small files (fits, records, autotuning
results) before the executables, the largest executables first (a large program took longest to
compile). Files are added while their total size stays within the budget (XLA's executables are
compressed already, so the archive is about that size); the rest is left out and printed.

Example:
    python scripts/pack_cache.py /tmp/lopt_xla_cache /tmp/xla_cache.tgz --budget-mib 24 --newer-than "$OUT/.started"
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tarfile

_SMALL = 64 * 1024


def choose(folder: pathlib.Path, budget: int, newer_than: float | None) -> tuple[list[pathlib.Path], int]:
    """The files to pack (relative paths) and the number left out."""
    stats = {p: p.stat() for p in folder.rglob("*") if p.is_file()}

    def rank(path: pathlib.Path) -> tuple:
        size = stats[path].st_size
        old = newer_than is not None and stats[path].st_mtime <= newer_than
        return (old, size > _SMALL, -size if size > _SMALL else size, str(path))

    chosen, total = [], 0
    for path in sorted(stats, key=rank):
        size = stats[path].st_size
        if total + size <= budget:
            chosen.append(path.relative_to(folder))
            total += size
    return chosen, len(stats) - len(chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=pathlib.Path)
    parser.add_argument("archive", type=pathlib.Path)
    parser.add_argument("--budget-mib", type=float, default=24.0)
    parser.add_argument("--newer-than", type=pathlib.Path, default=None,
                        help="a file whose modification time splits this session's files from older ones")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    if args.budget_mib <= 0:
        parser.error(f"--budget-mib={args.budget_mib} must be positive")
    if args.archive.exists():
        parser.error(f"{args.archive} exists; remove it or name another archive")
    newer = os.stat(args.newer_than).st_mtime if args.newer_than else None
    chosen, left_out = choose(args.folder, int(args.budget_mib * 1024 * 1024), newer)
    with tarfile.open(args.archive, "w:gz") as tar:
        for rel in chosen:
            tar.add(args.folder / rel, arcname=f"./{rel}")
    print(f"[pack_cache] {len(chosen)} files in {args.archive} ({args.archive.stat().st_size / 2**20:.1f} MiB), "
          f"{left_out} left out (budget {args.budget_mib} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

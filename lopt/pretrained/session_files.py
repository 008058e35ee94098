"""What a campaign session returns: its theta snapshots and its warm start.

A GPU session comes back as a folder (``--out``): ``run/`` with the metrics and the warm start,
and the theta snapshots the trainer wrote every minute, either as ``run/thetas/`` or bundled as
``thetas.tgz`` (a device call returns at most 8 files). :func:`keep_snapshots` files the
snapshots under their campaign step; :func:`warm_start_source` finds what the next session
starts from, falling back to the session's last snapshot when the warm start did not come back
(the snapshot at the session's final step is the same theta; the outer optimizer then starts
afresh).

Example:
    >>> import tempfile
    >>> from lopt.pretrained.session_files import snapshot_folder
    >>> snapshot_folder(tempfile.mkdtemp()) is None  # neither run/thetas/ nor thetas.tgz
    True
"""

from __future__ import annotations

import os
import tarfile
import tempfile

from lopt import checkpoint

__all__ = ["keep_snapshots", "snapshot_folder", "warm_start_source"]


def snapshot_folder(session_dir: str) -> str | None:
    """The folder of a session's snapshots (``thetas.tgz`` unpacked to a temporary one), or ``None``."""
    folder = os.path.join(session_dir, "run", "thetas")
    bundle = os.path.join(session_dir, "thetas.tgz")
    if not os.path.isdir(folder) and os.path.exists(bundle):
        folder = os.path.join(tempfile.mkdtemp(prefix="lopt-snapshots-"), "thetas")
        with tarfile.open(bundle) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".safetensors")
                       and not os.path.isabs(m.name) and ".." not in m.name.split("/")]
            tar.extractall(os.path.dirname(folder), members=members)
    return folder if os.path.isdir(folder) else None


def _snapshots(folder: str | None) -> dict[int, str]:
    """``{session outer step: path}`` of the snapshots in ``folder``."""
    found = {}
    for name in sorted(os.listdir(folder)) if folder else []:
        path = os.path.join(folder, name)
        step = int(checkpoint.read_metadata(path).get("extra", {}).get("outer_steps", -1))
        if step >= 0:
            found[step] = path
    return found


def keep_snapshots(session_dir: str, state_dir: str, *, start: int) -> list[str]:
    """Copies a session's theta snapshots to ``state_dir/thetas/theta-<campaign step>.safetensors``.

    Each is re-written with ``campaign_outer_steps`` in its header (its step in the whole
    campaign), which ``--ship`` and ``validate --record-best`` read. Existing files are never
    replaced.

    Returns:
        The files written.
    """
    from lopt.learned.serialization import load_theta, save_theta

    snapshots = _snapshots(snapshot_folder(session_dir))
    if snapshots:
        os.makedirs(os.path.join(state_dir, "thetas"), exist_ok=True)
    written = []
    for step, path in snapshots.items():
        target = os.path.join(state_dir, "thetas", f"theta-{start + step:06d}.safetensors")
        if os.path.exists(target):
            continue
        theta, lopt_ = load_theta(path)
        save_theta(target, lopt_, theta, extra={"campaign_outer_steps": start + step})
        written.append(target)
    return written


def warm_start_source(session_dir: str, outer_steps: int) -> tuple[str, bool]:
    """The file the next session warm-starts from, and whether it is a snapshot standing in.

    Args:
        session_dir: the session's ``--out`` folder as it came back.
        outer_steps: the outer steps the session took (its record in ``state.json``).

    Returns:
        ``(path, False)`` for ``run/warm_start.safetensors``; ``(path, True)`` for the snapshot at
        step ``outer_steps`` when the warm start is missing.

    Raises:
        FileNotFoundError: neither the warm start nor a snapshot of the session's final step is
            there (a snapshot of an earlier step would silently drop the steps after it).
    """
    warm = os.path.join(session_dir, "run", "warm_start.safetensors")
    if os.path.exists(warm):
        return warm, False
    snapshots = _snapshots(snapshot_folder(session_dir))
    if outer_steps in snapshots:
        return snapshots[outer_steps], True
    raise FileNotFoundError(
        f"{warm} is missing and no theta snapshot of the session's final step ({outer_steps}) is there "
        f"(snapshots at steps {sorted(snapshots) or 'none'}); fetch the warm start, or rewind the campaign to a "
        "snapshot (--rewind) and record the lost steps by hand.")

"""Meta-training with several processes (one per host or GPU group) through ``jax.distributed``.

Every process runs the same program: it builds the same tasks from the same seeds, so its state
is created identically and then *placed* on a mesh over the devices of **all** processes
(:func:`global_mesh`, :func:`put`). The mixture engine shards each bucket's task axis over that
mesh; the PES sums become cross-process all-reduces, so every process holds the same theta.

A launch is described by three environment variables (they describe where a run executes, not
what it computes, so they are not part of the run's ``config.json``):

============================  ==================================================================
``LOPT_COORDINATOR``          ``host:port`` of process 0 (every process gives the same address)
``LOPT_NUM_PROCESSES``        how many processes take part
``LOPT_PROCESS_ID``           this process's index, ``0 .. LOPT_NUM_PROCESSES - 1``
============================  ==================================================================

``LOPT_COORDINATOR=auto`` lets JAX detect all three from a cluster scheduler (SLURM, Open MPI,
Kubernetes). Without ``LOPT_COORDINATOR`` a run is a single process.

Files: process 0 writes the run directory; process ``k > 0`` writes the same files into its own
sibling folder ``<out>.process-<k>`` (:func:`process_out_dir`), so nothing is ever clobbered and
every host keeps a checkpoint it can resume from without a shared file system.

Example:
    >>> group = resolve({"LOPT_COORDINATOR": "localhost:1234", "LOPT_NUM_PROCESSES": "2",
    ...                  "LOPT_PROCESS_ID": "1"})
    >>> group
    ProcessGroup(coordinator='localhost:1234', num_processes=2, process_id=1)
    >>> resolve({}) is None
    True
    >>> process_out_dir("runs/demo", process_index=1)
    'runs/demo.process-1'
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

__all__ = ["ENV_COORDINATOR", "ENV_NUM_PROCESSES", "ENV_PROCESS_ID", "ProcessGroup", "agree", "gather",
           "global_mesh", "initialize", "initialize_from_env", "is_main_process", "local_task_mesh",
           "process_out_dir", "put", "replicate", "resolve", "shard_tasks"]

ENV_COORDINATOR = "LOPT_COORDINATOR"
ENV_NUM_PROCESSES = "LOPT_NUM_PROCESSES"
ENV_PROCESS_ID = "LOPT_PROCESS_ID"
AUTO = "auto"

_ADDRESS = re.compile(r"^\[?[A-Za-z0-9_.:-]+\]?:(\d{1,5})$")
_initialized: list = []  # the ProcessGroup this process joined (at most one)


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """Where this process sits in a multi-process run.

    Attributes:
        coordinator: ``host:port`` of process 0's coordination service, or ``"auto"`` (detected
            from the cluster scheduler by JAX).
        num_processes: processes taking part (``0`` with ``"auto"``: detected).
        process_id: this process's index (``-1`` with ``"auto"``: detected).
    """

    coordinator: str
    num_processes: int
    process_id: int


def _integer(environ: Mapping[str, str], name: str) -> int:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        raise ValueError(f"{ENV_COORDINATOR} is set but {name} is not; set {name} as well (every process of the "
                         f"run gets the same {ENV_COORDINATOR} and {ENV_NUM_PROCESSES}, and its own "
                         f"{ENV_PROCESS_ID} from 0 up).")
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer; give e.g. {name}=2.") from None


def resolve(environ: Mapping[str, str] | None = None) -> ProcessGroup | None:
    """The process group the environment describes, or ``None`` for a single-process run.

    Args:
        environ: the variables to read (default ``os.environ``).

    Raises:
        ValueError: a malformed address, a missing or non-integer count or index, or an index
            outside ``0 .. num_processes - 1``.

    Example:
        >>> resolve({"LOPT_COORDINATOR": "auto"})
        ProcessGroup(coordinator='auto', num_processes=0, process_id=-1)
        >>> resolve({"LOPT_COORDINATOR": "10.0.0.1:4321", "LOPT_NUM_PROCESSES": "2", "LOPT_PROCESS_ID": "2"})
        Traceback (most recent call last):
        ...
        ValueError: LOPT_PROCESS_ID=2 must be in 0..1 (one index per process of LOPT_NUM_PROCESSES=2).
    """
    environ = os.environ if environ is None else environ
    coordinator = environ.get(ENV_COORDINATOR, "").strip()
    if not coordinator:
        for name in (ENV_NUM_PROCESSES, ENV_PROCESS_ID):
            if environ.get(name, "").strip():
                raise ValueError(f"{name} is set but {ENV_COORDINATOR} is not; set {ENV_COORDINATOR}=host:port "
                                 f"(process 0's address, e.g. localhost:8476) or {ENV_COORDINATOR}=auto.")
        return None
    if coordinator == AUTO:
        return ProcessGroup(AUTO, 0, -1)
    match = _ADDRESS.match(coordinator)
    if match is None or not 0 < int(match.group(1)) < 65536:
        raise ValueError(f"{ENV_COORDINATOR}={coordinator!r} must be host:port (e.g. localhost:8476 or "
                         f"10.0.0.1:8476: process 0's host and a free port), or 'auto'.")
    num_processes = _integer(environ, ENV_NUM_PROCESSES)
    process_id = _integer(environ, ENV_PROCESS_ID)
    if num_processes < 1:
        raise ValueError(f"{ENV_NUM_PROCESSES}={num_processes} must be at least 1.")
    if not 0 <= process_id < num_processes:
        raise ValueError(f"{ENV_PROCESS_ID}={process_id} must be in 0..{num_processes - 1} (one index per process "
                         f"of {ENV_NUM_PROCESSES}={num_processes}).")
    return ProcessGroup(coordinator, num_processes, process_id)


def initialize(group: ProcessGroup) -> None:
    """Joins the process group (``jax.distributed.initialize``); a repeated call is a no-op.

    Must run before anything touches a JAX device. On CPU, cross-process collectives go
    through gloo.

    Raises:
        ValueError: this process already joined a different group.
        RuntimeError: JAX was already used in this process (from ``jax.distributed``).
    """
    if _initialized:
        if _initialized[0] != group:
            raise ValueError(f"this process already joined {_initialized[0]}; it cannot join {group} as well.")
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if group.coordinator == AUTO:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address=group.coordinator, num_processes=group.num_processes,
                                   process_id=group.process_id)
    _initialized.append(group)


def initialize_from_env(environ: Mapping[str, str] | None = None) -> ProcessGroup | None:
    """:func:`initialize` with the group the environment describes (nothing for a single process)."""
    group = resolve(environ)
    if group is not None:
        initialize(group)
    return group


def is_main_process() -> bool:
    """Whether this is process 0 (the one that writes the run directory)."""
    return jax.process_index() == 0


def process_out_dir(out_dir: str | os.PathLike, *, process_index: int | None = None) -> str:
    """The folder this process writes into: ``out_dir`` for process 0, ``<out_dir>.process-<k>`` else.

    A path that already names process ``k``'s folder is returned unchanged.
    """
    out_dir = os.fspath(out_dir)
    k = jax.process_index() if process_index is None else process_index
    suffix = f".process-{k}"
    if k == 0 or out_dir.rstrip(os.sep).endswith(suffix):
        return out_dir
    return out_dir.rstrip(os.sep) + suffix


def global_mesh(axis: str = "tasks") -> jax.sharding.Mesh | None:
    """A one-axis mesh over the devices of every process (``None`` when there is only one device)."""
    devices = jax.devices()
    if len(devices) == 1:
        return None
    return jax.make_mesh((len(devices),), (axis,), axis_types=(jax.sharding.AxisType.Auto,))


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _put_leaf(x: Any, sharding: jax.sharding.Sharding) -> Any:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:  # already global: reshard on device
        return x if x.sharding == sharding else jax.jit(lambda a: a, out_shardings=sharding)(x)
    if _is_key(x):
        data = _put_leaf(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def put(tree: Any, sharding: jax.sharding.Sharding) -> Any:
    """``jax.device_put(tree, sharding)`` that also works when ``sharding`` spans several processes.

    Every process must pass the same values (they are built from the same seeds); each process
    then transfers only the shards of its own devices. With one process this is
    ``jax.device_put``.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: _put_leaf(x, sharding), tree)


def replicate(tree: Any, mesh: jax.sharding.Mesh | None) -> Any:
    """``tree`` whole on every device of ``mesh`` (unchanged when ``mesh`` is ``None``)."""
    if mesh is None:
        return tree
    return put(tree, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def shard_tasks(tree: Any, mesh: jax.sharding.Mesh | None, num_tasks: int) -> Any:
    """Leaves whose leading axis has ``num_tasks`` entries split along it over ``mesh``'s axis;
    the others replicated (unchanged when ``mesh`` is ``None``).

    Example:
        >>> import jax.numpy as jnp
        >>> shard_tasks({"x": jnp.zeros((4, 3))}, None, 4)["x"].shape
        (4, 3)
    """
    if mesh is None:
        return tree
    from jax.sharding import NamedSharding, PartitionSpec

    def place(x):
        split = np.ndim(x) >= 1 and np.shape(x)[0] == num_tasks
        return put(x, NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]) if split else PartitionSpec()))

    return jax.tree.map(place, tree)


def local_task_mesh(num_tasks: int, axis: str = "tasks") -> jax.sharding.Mesh | None:
    """A mesh over this process's devices for a one-process run whose ``num_tasks`` split evenly
    over them; ``None`` with one device, several processes, or an uneven split.

    On a CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` makes ``N`` host devices
    that run their shares of the tasks in parallel threads.
    """
    count = jax.local_device_count()
    if count == 1 or jax.process_count() > 1 or num_tasks % count:
        return None
    return jax.make_mesh((count,), (axis,), axis_types=(jax.sharding.AxisType.Auto,))


def _gather_leaf(x: Any) -> Any:
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
        return x
    if _is_key(x):
        return jax.random.wrap_key_data(_gather_leaf(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def gather(tree: Any) -> Any:
    """The whole value of every leaf on this host (arrays sharded over several processes gathered).

    A collective: every process must call it at the same point. Leaves that are already whole on
    this host are returned as they are.
    """
    if jax.process_count() == 1:
        return tree
    return jax.tree.map(_gather_leaf, tree)


def agree(values: Sequence[int]) -> list[int]:
    """The largest of each value over all processes (a collective); ``values`` themselves with one process.

    Decisions that depend on a clock or a signal (checkpoint every N minutes, stop after N
    minutes, Ctrl-C) must be the same on every process, or one process would enter a
    collective that the others never reach. Taking the maximum means: if any process wants to
    checkpoint or stop, all do.

    Example:
        >>> agree([True, 0, 15])
        [1, 0, 15]
    """
    local = [int(v) for v in values]
    if jax.process_count() == 1:
        return local
    from jax.experimental import multihost_utils

    every = np.asarray(multihost_utils.process_allgather(np.asarray(local, np.int32)))
    return [int(v) for v in every.reshape(-1, len(local)).max(axis=0)]

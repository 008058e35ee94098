"""Every CPU core a JAX device for ``lopt train``: meta-training's task axis splits over them.

On a CPU, XLA runs one program on one host device, and the small per-task operations of
meta-training leave most cores idle. JAX can present the cores as several host devices
(``jax_num_cpu_devices``); the trainer then splits its tasks over them
(:func:`lopt.meta.distributed.local_task_mesh`, the one-device theta trajectory to float
tolerance) and they run in parallel: on the 2-core development machine the canonical config at
16 tasks ran 1.9-2.3x the plain one-device reference instead of 1.3-1.5x (README speed table).

``lopt train`` turns this on before JAX starts. ``LOPT_HOST_DEVICES`` picks the count: ``auto``
(the default: the cores this process may use, at most 8), ``1`` (off) or a number. It is left
alone when the user already chose (``XLA_FLAGS=--xla_force_host_platform_device_count=N`` or
``jax_num_cpu_devices``), in a run of several processes, and once JAX's backends have started.
A GPU run is unaffected: the host devices are not the default backend.

Example:
    >>> from lopt.cli.host_devices import host_device_count
    >>> host_device_count({"LOPT_HOST_DEVICES": "1"}, cores=4)
    1
    >>> host_device_count({}, cores=16)
    8
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from lopt.env_settings import parse_count

__all__ = ["HOST_DEVICES_ENV", "MAX_AUTO_DEVICES", "host_device_count", "use_host_cores"]

#: ``auto`` (default), ``1`` (one host device) or a positive number of host devices.
HOST_DEVICES_ENV = "LOPT_HOST_DEVICES"
#: ``auto`` uses at most this many host devices.
MAX_AUTO_DEVICES = 8
_XLA_FLAG = "--xla_force_host_platform_device_count"


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def host_device_count(environ: Mapping[str, str] | None = None, *, cores: int | None = None) -> int:
    """The number of host devices ``LOPT_HOST_DEVICES`` asks for.

    Args:
        environ: the environment (default ``os.environ``).
        cores: the usable cores (default: this process's CPU affinity).

    Returns:
        The count; 1 means one host device (nothing to change).

    Raises:
        ValueError: ``LOPT_HOST_DEVICES`` is neither ``auto`` nor a positive integer.
    """
    environ = os.environ if environ is None else environ
    setting = environ.get(HOST_DEVICES_ENV, "auto").strip().lower()
    if setting == "auto":
        return max(1, min(MAX_AUTO_DEVICES, _usable_cores() if cores is None else cores))
    return parse_count(HOST_DEVICES_ENV, environ[HOST_DEVICES_ENV], minimum=1,
                       expected="'auto' or a positive integer (1 keeps one host device)")


def use_host_cores(environ: Mapping[str, str] | None = None) -> int | None:
    """Presents the CPU as :func:`host_device_count` JAX devices, if nothing has decided it yet.

    Call before anything starts JAX's backends (creating an array does).

    Args:
        environ: the environment (default ``os.environ``).

    Returns:
        The number of host devices set, or ``None`` when left alone (one device asked for, the user
        set it already, several processes, or JAX already started).

    Raises:
        ValueError: a bad ``LOPT_HOST_DEVICES``.
    """
    import jax
    from jax._src import xla_bridge

    from lopt.meta import distributed

    environ = os.environ if environ is None else environ
    count = host_device_count(environ)
    if (count == 1 or _XLA_FLAG in environ.get("XLA_FLAGS", "") or jax.config.jax_num_cpu_devices > 0
            or distributed.resolve(environ) is not None or xla_bridge.backends_are_initialized()):
        return None
    jax.config.update("jax_num_cpu_devices", count)
    return count

"""Lowered programs kept on disk as ``jax.export`` modules, so a repeat set-up does not trace them.

A mixture run's set-up traces and lowers one PES program per structure and one normaliser-fit
program per structure: Python work under the interpreter lock, 2-9 s per program on a GPU host,
which bounds the set-up even when JAX's persistent compilation cache makes XLA's part a cache hit
(that cache is keyed by the lowered module, so it cannot skip the tracing). :class:`ProgramCache`
keeps each lowered program as a serialised :mod:`jax.export` module (StableHLO bytecode) and
compiles later runs from it: deserialising and lowering it takes ~0.3 s.

A program is keyed by everything that decides it: the function's name and static arguments, the
arguments' tree structure (which names every class and static setting of the estimator, the
problem, the tasks and the learned optimizer) and their shapes and dtypes, a fingerprint of
lopt's sources, JAX's version, the backend and the JAX settings and kernel mode that change what
is traced. A miss exports the program (one trace, as before), writes the module and a JSON record
with its SHA-256, and compiles from the module it wrote, so a first run and a repeat run compile
the same module (and hit XLA's persistent cache alike). A file that does not match its record is
ignored with a warning and exported again. Files are written atomically, the module under its own digest before the record that names it;
no pickle.

The function's outputs must be standard containers (tuples, lists, dicts with string keys) of
arrays: a caller with custom pytrees returns their leaves and rebuilds them.

Example:
    >>> import tempfile, jax, jax.numpy as jnp
    >>> from lopt.meta.program_cache import ProgramCache
    >>> cache = ProgramCache(tempfile.mkdtemp())
    >>> def scaled(tree, power):
    ...     return {"total": sum(jnp.sum(x ** power) for x in jax.tree.leaves(tree))}
    >>> args = ({"a": jnp.ones(3), "b": jnp.arange(2.0)},)
    >>> program = cache.compile(scaled, args, name="demo", static={"power": 2})
    >>> float(program(*args)["total"]), cache.misses
    (4.0, 1)
    >>> float(cache.compile(scaled, args, name="demo", static={"power": 2})(*args)["total"]), cache.hits
    (4.0, 1)
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax

from lopt import checkpoint
from lopt.meta.normalizer import default_cache_dir, read_matching_document
from lopt.meta.trace_gate import tracing
from lopt.source_fingerprint import source_fingerprint

__all__ = ["ProgramCache", "available", "code_fingerprint"]

_FORMAT = "lopt.program"
_FORMAT_VERSION = 1


def available() -> bool:
    """Whether this JAX can serialise exported programs (it needs the ``flatbuffers`` package)."""
    try:
        from jax._src.export import serialization  # noqa: F401 - raises ImportError without flatbuffers
    except ImportError:
        return False
    return True


def code_fingerprint() -> str:
    """The fingerprint of the lopt sources a program's key holds (all of them): a program, or a
    record about programs (:mod:`lopt.meta.prewarm`), of other sources is never read again."""
    return source_fingerprint("**/*.py")


def _settings() -> dict[str, Any]:
    """The process-wide settings that change what a function traces to."""
    from lopt.kernels.select import get_mode

    return {"jax": jax.__version__, "jaxlib": getattr(jax.lib, "__version__", ""), "backend": jax.default_backend(),
            "x64": bool(jax.config.jax_enable_x64), "matmul_precision": str(jax.config.jax_default_matmul_precision),
            "kernels": get_mode(), "code": code_fingerprint()}


class _Program:
    """A compiled flat program called with the original pytree arguments."""

    def __init__(self, compiled: Any, treedef: Any, record: dict[str, Any], path: pathlib.Path | None,
                 from_cache: bool, seconds: Mapping[str, float] | None = None):
        self.compiled, self.treedef, self.record, self.path = compiled, treedef, record, path
        self.from_cache = from_cache  # read back (True) or exported / traced here (False)
        #: Where making it took its time: ``gate`` (waiting to trace, :mod:`lopt.meta.trace_gate`),
        #: ``module`` (reading the cached module, or tracing, exporting and writing it), ``lower``
        #: and ``compile`` (XLA's, which its persistent cache may answer).
        self.seconds = dict(seconds or {})

    @property
    def origin(self) -> str:
        """How this process got the program, for logs: ``"cached module"``, ``"exported"`` (and
        written to the cache) or ``"traced"`` (it could not be exported, so it is not cached)."""
        return "cached module" if self.from_cache else "exported" if self.path is not None else "traced"

    def __call__(self, *args: Any) -> Any:
        leaves, treedef = jax.tree.flatten(args)
        if treedef != self.treedef:
            raise ValueError(f"ProgramCache: this program was compiled for arguments shaped {self.treedef}, "
                             f"called with {treedef}; compile one for these arguments.")
        return self.compiled(*leaves)

    def cost_analysis(self) -> Any:
        """XLA's cost analysis of the compiled program (as ``jax.stages.Compiled.cost_analysis``)."""
        return self.compiled.cost_analysis()


class ProgramCache:
    """Serialised lowered programs on disk (see the module docs).

    Args:
        directory: where the files live; default :func:`lopt.meta.normalizer.default_cache_dir`
            (``$LOPT_CACHE_DIR/normalizers`` or ``~/.cache/lopt/normalizers``), shared with the
            normaliser caches under other file names (``program-*``).

    Attributes:
        hits, misses: programs read from the cache / exported and written since construction.
    """

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = pathlib.Path(default_cache_dir() if directory is None else directory)
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        self._loaded: dict[pathlib.Path, _Program] = {}  # compiled here already: same key, same program

    def __repr__(self) -> str:
        return f"ProgramCache({str(self.directory)!r})"

    def _locate(self, fn: Callable, name: str, treedef: Any, leaves: list,
                static: Mapping[str, Any]) -> tuple[dict[str, Any], pathlib.Path]:
        identity = {"format": _FORMAT, "format_version": _FORMAT_VERSION, **_settings(),
                    "function": f"{fn.__module__}.{fn.__qualname__}", "static": repr(sorted(static.items())),
                    "tree": str(treedef), "avals": [[list(x.shape), str(x.dtype)] for x in leaves]}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        return identity, self.directory / f"program-{safe}-{digest[:24]}"

    def _read(self, base: pathlib.Path, identity: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
        record_path = base.with_suffix(".json")
        if not record_path.exists():
            return None
        try:
            record = read_matching_document(record_path, identity)
            blob = (base.parent / pathlib.Path(record["module_file"]).name).read_bytes()
            if hashlib.sha256(blob).hexdigest() != record.get("module_sha256"):
                raise ValueError("its module does not match the digest in its record")
            return jax.export.deserialize(bytearray(blob)), record
        except (OSError, ValueError, TypeError, KeyError) as err:
            warnings.warn(f"ProgramCache: ignoring {str(record_path)!r} ({err}); the program is traced again.",
                          RuntimeWarning, stacklevel=3)
            return None

    def _write(self, base: pathlib.Path, identity: dict[str, Any], blob: bytes,
               notes: dict[str, Any]) -> dict[str, Any]:
        # The module's file is named by its own digest and written first, then the record that names
        # it: two processes exporting one program at once (their modules can differ in the bytes, not
        # in what they compute) leave a record that names a complete module of its own.
        digest = hashlib.sha256(blob).hexdigest()
        module_file = f"{base.name}.{digest[:16]}.stablehlo"
        record = {**notes, **identity, "module_file": module_file, "module_sha256": digest, "module_bytes": len(blob)}
        checkpoint.atomic_write(base.parent / module_file, blob)
        checkpoint.atomic_write(base.with_suffix(".json"), (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
        return record

    def compile(self, fn: Callable, args: tuple, *, name: str, static: Mapping[str, Any] | None = None,
                describe: Callable[[Any], Mapping[str, Any]] | None = None) -> _Program:
        """``fn(*args, **static)`` compiled from its cached module, exported and cached on a miss.

        Tracing and lowering pass through :mod:`lopt.meta.trace_gate`; XLA's compilation does not.

        Args:
            fn: the function (outputs: standard containers of arrays).
            args: its array arguments (pytrees of arrays or of ``jax.ShapeDtypeStruct``).
            name: a readable part of the file name (e.g. ``"bucket-mlp_vae"``).
            static: keyword arguments baked into the program (their ``repr`` is part of the key).
            describe: ``jaxpr -> {key: JSON value}``, run on the traced program when it is exported
                (the export reuses that trace) and kept in its record, e.g. a FLOP count that
                needs the jaxpr a cached program no longer has: ``program.record[key]``.

        Returns:
            The compiled program: call it with ``*args`` (arrays of the same structure and shapes).
        """
        static = dict(static or {})
        leaves, treedef = jax.tree.flatten(args)
        specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves]
        identity, base = self._locate(fn, name, treedef, leaves, static)
        with self._lock:
            if base in self._loaded:
                self.hits += 1
                return self._loaded[base]

        def flat(*flat_leaves):
            return fn(*jax.tree.unflatten(treedef, flat_leaves), **static)

        t0 = time.perf_counter()
        with tracing():
            t1 = time.perf_counter()
            found = self._read(base, identity)
            if found is None:
                jitted = jax.jit(flat)
                traced = jitted.trace(*specs)  # the export below finds this trace in JAX's cache
                notes = dict(describe(traced.jaxpr)) if describe is not None else {}
                try:
                    blob = bytes(jax.export.export(jitted)(*specs).serialize())
                except Exception as err:  # noqa: BLE001 - e.g. a kernel's custom call jax.export cannot keep
                    warnings.warn(f"ProgramCache: {name} cannot be exported ({type(err).__name__}: {err}); it is "
                                  "traced and compiled without the cache.", RuntimeWarning, stacklevel=2)
                    lowered, record, base = traced.lower(), notes, None
                else:
                    record = self._write(base, identity, blob, notes)
                    t2 = time.perf_counter()
                    exported = jax.export.deserialize(bytearray(blob))  # compile what a repeat run will read
                    lowered = jax.jit(exported.call).lower(*specs)
            else:
                t2 = time.perf_counter()
                exported, record = found
                lowered = jax.jit(exported.call).lower(*specs)
            t3 = time.perf_counter()
        if base is None:  # traced and lowered without an export: no separate lowering time
            t2 = t3
        compiled = lowered.compile()
        t4 = time.perf_counter()
        seconds = {"gate": t1 - t0, "module": t2 - t1, "lower": t3 - t2, "compile": t4 - t3}
        program = _Program(compiled, treedef, record, base, found is not None, seconds)
        with self._lock:
            if found is None:
                self.misses += 1
            else:
                self.hits += 1
            if base is not None:
                self._loaded[base] = program
        return program

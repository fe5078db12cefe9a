"""An executable cache of our own, beside JAX's persistent compilation cache: a warm start
skips the lowering to MLIR and JAX's cache-key computation, not only the XLA compilation.

JAX's persistent cache keys a program by its lowered MLIR module, so every run still traces,
lowers and serialises each jitted function before it can look the program up (about 0.3 s of a
warm ``ptyro demo`` on 2 cores, and the same again for the 40 one-operation programs that eager
``jnp`` calls make). This cache is consulted one step earlier, where JAX has the traced program
(a closed jaxpr) and is about to lower it: its key is a hash of

* the jaxpr as text (NumPy arrays in parameters printed in full) and the bytes of its constants,
* every argument's abstract value, sharding, committedness and kind (NumPy or JAX array),
* the call's shardings, layouts, donations, mesh, name and compiler options,
* the JAX and jaxlib versions, the backend's platform version and devices, ``XLA_FLAGS`` and
  every JAX configuration value (the global ones and those in the trace context),

so two programs with the same key lower to the same module: correct by construction, and
nothing but the compiled program is stored (never a result). What it stores is
``jax.experimental.serialize_executable``'s form of the compiled executable; a hit loads it
with the backend's ``deserialize_executable`` and runs it as JAX would have run its own.

Not cached (JAX's own path runs, unchanged): programs with effects or host callbacks (their
executables hold pointers into this process), with hoisted constants, PGLE profiling, runs with
more than one process, and any program for which anything here fails: an unreadable or corrupt
entry is removed and the program compiled as usual. A program that JAX loads from its own cache
is not added to this one (on the CPU, an executable loaded from a cache, or the same program
compiled again in the process that loaded it, serialises without its kernels: it would load but
fail to run); so a cache directory filled before this cache existed, or with it off, gains
those programs only once JAX's entries are gone (a new ``PTYRO_JAX_CACHE`` directory fills both). Switched on by :func:`install` (the
``ptyro`` command does it with the compilation cache; ``PTYRO_EXEC_CACHE=0`` turns it off);
:func:`uninstall` restores JAX's function.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

__all__ = ["install", "uninstall", "installed", "stats", "LOAD_EVENT"]

#: the ``jax.monitoring`` duration event of each program loaded from this cache (seconds)
LOAD_EVENT = "/ptyro/exec_cache/load_duration"

_SUFFIX = ".jexe"
_state: dict[str, Any] = {"dir": None, "original": None, "listening": False}
_jax_hits = [0]  # programs JAX loaded from its own persistent cache in this process
_stats = {"hits": 0, "misses": 0, "stored": 0, "skipped": 0, "errors": 0}
_memory: dict[str, Any] = {}  # key -> executable, the last _MEMORY of this process
_MEMORY = 64
_texts: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()  # jaxpr -> its hash


def installed() -> str | None:
    """The directory of the installed cache (None: not installed)."""
    return _state["dir"]


def stats() -> dict[str, int]:
    """Counts of this process: programs loaded (hits), compiled (misses), stored, skipped
    (not cacheable) and errors (fell back to JAX's path)."""
    return dict(_stats)


def install(directory: str | Path) -> str:
    """Consult (and fill) the cache in ``directory`` for every program JAX is about to lower.
    The directory must exist and be private to this user (the caller checks, as for JAX's own
    cache: compiled programs are code). Returns the directory."""
    from jax._src import pjit

    where = str(Path(directory))
    if not _state["listening"]:
        from jax import monitoring

        monitoring.register_event_listener(_count_jax_hit)
        _state["listening"] = True
    if _state["original"] is None:
        _state["original"] = pjit._resolve_and_lower
        pjit._resolve_and_lower = _resolve_and_lower  # type: ignore[assignment]  # same call, a lowering that may not be made yet
    _state["dir"] = where
    return where


def _count_jax_hit(event: str, **_: Any) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _jax_hits[0] += 1


def uninstall() -> None:
    """Restore JAX's own function; programs already loaded stay in JAX's in-memory caches."""
    if _state["original"] is not None:
        from jax._src import pjit

        pjit._resolve_and_lower = _state["original"]
    _state["original"] = None
    _state["dir"] = None
    _memory.clear()


def _resolve_and_lower(args: Any, **params: Any) -> Any:
    """``pjit._resolve_and_lower`` (the step from a traced program to its lowering, for a call
    and for ``.lower()`` alike) with the cache in front: a lowering whose ``compile()`` loads
    the stored executable, and lowers and compiles only where there is none."""
    original, where = _state["original"], _state["dir"]

    def lower() -> Any:
        return original(args, **params)

    try:
        key = _key(args, params) if where is not None else None
    except Exception:  # noqa: BLE001 - anything unusual: JAX's own path
        key = None
        _stats["errors"] += 1
    if key is None:
        _stats["skipped"] += 1
        return lower()
    return _Lowering(where, key, params["jaxpr"], lower)


class _Lowering:
    """A lowering not made yet: ``compile()`` (with JAX's defaults) loads the stored executable;
    anything else, or a program not stored, makes the real lowering and asks it."""

    def __init__(self, where: str, key: str, jaxpr: Any, lower: Any) -> None:
        self._where, self._key, self._jaxpr, self._lower = where, key, jaxpr, lower
        self._real: Any = None

    def _lowering(self) -> Any:
        if self._real is None:
            self._real = self._lower()
        return self._real

    @property
    def const_args(self) -> list[Any]:
        return [] if self._real is None else self._real.const_args  # none where cached (_cacheable)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lowering(), name)

    def compile(self, compiler_options: Any = None, *, device_assignment: Any = None) -> Any:
        if compiler_options is not None or device_assignment is not None:
            return self._lowering().compile(compiler_options, device_assignment=device_assignment)
        t = time.perf_counter()
        exe = _memory.get(self._key) or _load(self._where, self._key, self._jaxpr)
        if exe is not None:
            _stats["hits"] += 1
            _remember(self._key, exe)
            from jax import monitoring

            monitoring.record_event_duration_secs(LOAD_EVENT, time.perf_counter() - t)
            return exe
        _stats["misses"] += 1
        hits = _jax_hits[0]
        exe = self._lowering().compile()
        # not stored where JAX loaded it from its own cache: on the CPU (jaxlib 0.10.2), such an
        # executable, or the same program compiled again in this process, serialises without its
        # kernels and fails to run where it is loaded ("Function ... not found"); measured
        if _jax_hits[0] == hits and _store(self._where, self._key, exe, self._real.const_args):
            _remember(self._key, exe)
        return exe


def _remember(key: str, exe: Any) -> None:
    """Keep the last few executables of this process (the ``.lower().compile()`` of a program
    and its call that follows load it once)."""
    _memory[key] = exe
    while len(_memory) > _MEMORY:
        del _memory[next(iter(_memory))]


def _cacheable(jaxpr: Any) -> bool:
    from jax._src import config, xla_bridge

    return not (jaxpr.effects or config.enable_pgle.value or config.use_simplified_jaxpr_constants.value or xla_bridge.process_count() > 1)


def _jaxpr_hash(jaxpr: Any) -> str | None:
    """The hash of the jaxpr's text and its constants' bytes (None: it calls back into Python)."""
    got = _texts.get(jaxpr)
    if got is not None:
        return got or None
    import numpy as np

    with np.printoptions(threshold=sys.maxsize):  # an array parameter printed in full, never "..."
        text = str(jaxpr.jaxpr)
    if "callback" in text:
        _texts[jaxpr] = ""
        return None
    h = hashlib.sha256(text.encode())
    for c in jaxpr.consts:
        a = np.asarray(c)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    digest = h.hexdigest()
    _texts[jaxpr] = digest
    return digest


def _environment() -> str:
    """What else decides the compiled program: versions, backend, devices, flags, configuration."""
    import jax
    import jaxlib
    from jax._src import config, xla_bridge

    backend = xla_bridge.get_backend()
    values = sorted((k, _stable(v)) for k, v in jax.config.values.items())
    return repr(
        (
            jax.__version__,
            jaxlib.__version__,
            backend.platform,
            backend.platform_version,
            [repr(d) for d in backend.devices()],
            os.environ.get("XLA_FLAGS", ""),
            values,
            [_stable(v) for v in config.trace_context()],
        )
    )


def _stable(value: Any) -> str:
    """``repr(value)``, the same in every process: an object printed with its address is
    written as its type and slots (JAX's ``AxisEnv``); one without slots cannot be keyed."""
    text = repr(value)
    if " at 0x" not in text:
        return text
    slots = getattr(type(value), "__slots__", None)
    if not slots:
        raise ValueError(f"no stable form for {type(value).__name__}")
    return repr((type(value).__qualname__, [(s, _stable(getattr(value, s, None))) for s in slots if s != "__weakref__"]))


def _key(args: Any, params: dict[str, Any]) -> str | None:
    """The cache key of a lowering (``args``: the arguments' ``MetaTy``), None where the program
    is not cached."""
    from jax._src.interpreters import mlir

    jaxpr = params["jaxpr"]
    if params.get("lowering_platforms") is not None or params.get("lowering_parameters") != mlir.LoweringParameters():
        return None  # an export or a cross-platform lowering
    if params.get("pgle_profiler") is not None or not _cacheable(jaxpr):
        return None
    program = _jaxpr_hash(jaxpr)
    if program is None:
        return None
    rest = {k: v for k, v in params.items() if k not in ("jaxpr", "pgle_profiler")}
    h = hashlib.sha256(program.encode())
    h.update(repr(sorted((k, _stable(v)) for k, v in rest.items())).encode())
    h.update(repr([_stable(a) for a in args]).encode())
    h.update(_environment().encode())
    return h.hexdigest()


def _load(where: str, key: str, jaxpr: Any) -> Any:
    """The executable stored under ``key``, loaded on this backend (None: none, or unusable)."""
    path = Path(where) / (key + _SUFFIX)
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    try:
        from jax._src import xla_bridge
        from jax.experimental.serialize_executable import _JaxPjrtUnpickler

        backend = xla_bridge.get_backend()
        ids, payload = pickle.loads(blob)
        by_id = {d.id: d for d in backend.devices()}
        # on the devices it was compiled for (deserialising onto all of them expects that many shards)
        unloaded = _JaxPjrtUnpickler(io.BytesIO(payload), backend, [by_id[i] for i in ids]).load()
        exe = unloaded.load()
        if [str(a) for a in exe.out_avals] != [str(a) for a in jaxpr.out_avals]:
            raise ValueError("stored executable does not match the program")
        return exe
    except Exception:  # noqa: BLE001 - corrupt or from another build: removed, compiled again
        _forget(where, key)
        return None


def _forget(where: str, key: str) -> None:
    """Remove an unusable entry (counted as an error); the program is compiled as usual."""
    _stats["errors"] += 1
    _memory.pop(key, None)
    try:
        (Path(where) / (key + _SUFFIX)).unlink()
    except OSError:
        pass


def _store(where: str, key: str, compiled: Any, const_args: Any) -> bool:
    """Write the compiled executable under ``key`` (atomically; nothing on any failure).
    Returns whether it was written."""
    unloaded = getattr(compiled, "_unloaded_executable", None)
    if unloaded is None or const_args or getattr(unloaded, "host_callbacks", None) or (getattr(unloaded, "mut", None) and unloaded.mut.in_mut):
        return False
    try:
        from jax.experimental.serialize_executable import _JaxPjrtPickler

        buf = io.BytesIO()
        _JaxPjrtPickler(buf).dump(unloaded)
        blob = pickle.dumps(([d.id for d in unloaded.device_list], buf.getvalue()))
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".tmp-", suffix=_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, Path(where) / (key + _SUFFIX))
        except BaseException:
            os.unlink(tmp)
            raise
        _stats["stored"] += 1
        return True
    except Exception:  # noqa: BLE001 - not serialisable, disk full: the next run compiles it again
        _stats["errors"] += 1
        return False

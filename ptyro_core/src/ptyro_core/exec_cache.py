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
those programs only once JAX's entries are gone (a new ``PTYRO_JAX_CACHE`` directory fills both).

One step earlier still (JAX 0.10.2 only): a top-level jitted function of our packages or of a
registered plugin is looked up before it is traced, by its identity and code, the files of the
packages, its arguments' structure, types and shardings and its static arguments written out
field by field (see "without tracing" below); a hit runs the stored executable untraced.

Switched on by :func:`install` (the ``ptyro`` command does it with the compilation cache;
``PTYRO_EXEC_CACHE=0`` turns it off); :func:`uninstall` restores JAX's functions.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

__all__ = ["install", "uninstall", "installed", "stats", "LOAD_EVENT"]

#: the ``jax.monitoring`` duration event of each program loaded from this cache (seconds)
LOAD_EVENT = "/ptyro/exec_cache/load_duration"

_SUFFIX = ".jexe"
_state: dict[str, Any] = {"dir": None, "original": None, "cpp_pjit": None, "jit_lower": None, "listening": False, "sources": None}
_jax_hits = [0, 0]  # programs loaded in this process: from JAX's own persistent cache, from any cache
_stats = {"hits": 0, "misses": 0, "stored": 0, "skipped": 0, "errors": 0, "untraced": 0}
_memory: dict[str, Any] = {}  # key -> executable, the last _MEMORY of this process
_MEMORY = 64
_texts: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()  # jaxpr -> its hash
_lock = threading.Lock()  # _memory and _texts, for programs compiled on several threads


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
    if not callable(getattr(pjit, "_resolve_and_lower", None)):
        raise RuntimeError("this JAX has no pjit._resolve_and_lower: the executable cache cannot be installed")
    if not _state["listening"]:
        from jax import monitoring

        monitoring.register_event_listener(_count_jax_hit)
        _state["listening"] = True
    if _state["original"] is None:
        _state["original"] = pjit._resolve_and_lower
        pjit._resolve_and_lower = _resolve_and_lower  # type: ignore[assignment]  # same call, a lowering that may not be made yet
    if _state["cpp_pjit"] is None and _untraced_supported():
        _state["cpp_pjit"], _state["jit_lower"] = pjit._cpp_pjit, pjit.jit_lower
        pjit._cpp_pjit, pjit.jit_lower = _cpp_pjit, _jit_lower
    _state["dir"] = where
    return where


def _count_jax_hit(event: str, **_: Any) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _jax_hits[0] += 1
        _jax_hits[1] += 1


def uninstall() -> None:
    """Restore JAX's own function; programs already loaded stay in JAX's in-memory caches."""
    if _state["original"] is not None:
        from jax._src import pjit

        pjit._resolve_and_lower = _state["original"]
        if _state["cpp_pjit"] is not None:
            pjit._cpp_pjit, pjit.jit_lower = _state["cpp_pjit"], _state["jit_lower"]
    _state["original"] = _state["cpp_pjit"] = _state["jit_lower"] = None
    _state["dir"] = None
    with _lock:
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
        exe = _memory.get(self._key) or _load(self._where, self._key, [str(a) for a in self._jaxpr.out_avals])
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
    with _lock:
        _memory[key] = exe
        while len(_memory) > _MEMORY:
            del _memory[next(iter(_memory))]


def _cacheable(jaxpr: Any) -> bool:
    return not jaxpr.effects and _cacheable_now()


def _jaxpr_hash(jaxpr: Any) -> str | None:
    """The hash of the jaxpr's text and its constants' bytes (None: it calls back into Python)."""
    with _lock:
        got = _texts.get(jaxpr)
    if got is not None:
        return got or None
    import numpy as np

    with np.printoptions(threshold=sys.maxsize):  # an array parameter printed in full, never "..."
        text = str(jaxpr.jaxpr)
    if "callback" in text:
        with _lock:
            _texts[jaxpr] = ""
        return None
    h = hashlib.sha256(text.encode())
    for c in jaxpr.consts:
        a = np.asarray(c)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    digest = h.hexdigest()
    with _lock:
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


def _load(where: str, key: str, out_avals: list[str]) -> Any:
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
        if [str(a) for a in exe.out_avals] != out_avals:
            raise ValueError("stored executable does not match the program")
        _jax_hits[1] += 1
        return exe
    except Exception:  # noqa: BLE001 - corrupt or from another build: removed, compiled again
        _forget(where, key)
        return None


def _forget(where: str, key: str) -> None:
    """Remove an unusable entry (counted as an error); the program is compiled as usual."""
    _stats["errors"] += 1
    with _lock:
        _memory.pop(key, None)
    try:
        (Path(where) / (key + _SUFFIX)).unlink()
    except OSError:
        pass


def _write(path: Path, blob: bytes) -> None:
    """Write ``blob`` at ``path`` atomically (a temporary name renamed; nothing on failure)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


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
        payload = buf.getvalue()
        if _jax_hits[1] and unloaded.backend.platform == "cpu" and b"\x7fELF" not in payload:
            # no object code, in a process that has loaded executables: a program compiled again
            # in a process that loaded it serialises so (jaxlib 0.10.2) and would fail to run
            # where it is loaded; a program without kernels is then not stored either
            return False
        _write(Path(where) / (key + _SUFFIX), pickle.dumps(([d.id for d in unloaded.device_list], payload)))
        _stats["stored"] += 1
        return True
    except Exception:  # noqa: BLE001 - not serialisable, disk full: the next run compiles it again
        _stats["errors"] += 1
        return False


# --------------------------------------------------------------------------- without tracing
#
# A top-level function of our packages (no closure, found under its name in its module) that
# JAX jits is looked up before it is traced: by its module and name, the files of our packages
# and of every plugin registered under ``ptyrodactyl`` (paths, sizes, modification times), the
# static arguments (their repr, which must not hold an address), the dynamic arguments' tree
# structure, types and shardings, the ``jit`` options, the PTYRO_* environment and the rest of
# the key above. A hit runs the stored executable at once: neither traced nor lowered. Only on
# the JAX release whose ``jit`` internals this follows; a miss takes JAX's own path.

_JAX_RELEASE = "0.10.2"
#: the fields of JAX's ``PjitInfo`` that key its C++ jit cache (``pjit._cpp_pjit``)
_CPP_CACHE_KEYS = tuple(
    f"{side}_{what}" for side in ("in", "out") for what in ("shardings_treedef", "shardings_leaves", "layouts_treedef", "layouts_leaves")
) + ("donate_argnums", "donate_argnames", "device", "backend", "compiler_options_kvs")
_LINK = ".jlink"


def _untraced_supported() -> bool:
    import jax
    from jax._src import pjit

    names = ("_cpp_pjit", "jit_lower", "_infer_params", "_run_python_pjit", "_get_fastpath_data", "_need_to_rebuild_with_fdo", "_get_cpp_global_cache")
    return jax.__version__ == _JAX_RELEASE and all(hasattr(pjit, n) for n in names) and os.environ.get("PTYRO_EXEC_CACHE_TRACE", "") != "1"


def _eligible(fun: Any) -> bool:
    """A plain top-level function (no closure, not nested) of one of our packages or of a
    registered plugin."""
    import types

    if not isinstance(fun, types.FunctionType) or fun.__closure__ or "<" in fun.__qualname__ or "." in fun.__qualname__:
        return False
    return fun.__module__.split(".")[0] in _sources()[1]


def _code(fun: Any) -> str:
    """What tells two functions of the same name apart: their bytecode, names, line and defaults."""
    c = fun.__code__
    return repr((c.co_code.hex(), c.co_names, c.co_firstlineno, _stable(fun.__defaults__), _stable(fun.__kwdefaults__)))


def _sources() -> tuple[str, set[str]]:
    """(a fingerprint of the sources of our packages and registered plugins, their top-level
    package names); computed once per process."""
    if _state["sources"] is None:
        from importlib.metadata import entry_points
        from importlib.util import find_spec

        names = {m.split(".")[0] for m in list(sys.modules) if m.startswith("ptyro_")}
        names |= {ep.module.split(".")[0] for ep in entry_points(group="ptyrodactyl")}
        h = hashlib.sha256()
        for name in sorted(names):
            spec = find_spec(name)  # where the package (or module) is, without importing it
            if spec is None:
                continue
            roots = list(spec.submodule_search_locations or [])
            # every file of the package (sources and data tables), not the bytecode
            files = [f for r in roots for f in sorted(Path(r).rglob("*")) if f.is_file() and "__pycache__" not in f.parts]
            files = files or ([Path(spec.origin)] if spec.origin else [])
            for f in files:
                st = f.stat()
                h.update(f"{f}:{st.st_size}:{st.st_mtime_ns};".encode())
        _state["sources"] = (h.hexdigest(), names)
    return _state["sources"]


def _untraced_key(fun: Any, jit_info: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, list[Any]] | None:
    """(key, the flat dynamic arguments) of a call, without tracing; None: not cacheable."""
    from jax._src import config, core, pjit, tree_util
    from jax._src.lib import jax_jit

    if not core.trace_state_clean() or config.disable_jit.value or config.debug_key_reuse.value:
        return None
    signature, dynargs = jax_jit.parse_arguments(
        args, tuple(kwargs.values()), tuple(kwargs.keys()), jit_info.static_argnums, jit_info.static_argnames, tree_util.tracing_registry
    )
    if any(isinstance(a, core.Tracer) for a in dynargs) or not _cacheable_now() or _runtime_plugins():
        return None
    statics = [(str(i), _canon(a)) for i, a in enumerate(args) if i in jit_info.static_argnums]
    statics += [(k, _canon(v)) for k, v in sorted(kwargs.items()) if k in jit_info.static_argnames]
    if any(text is None for _, text in statics):
        return None  # a static argument with no text that says all it is
    h = hashlib.sha256(f"{fun.__module__}:{fun.__qualname__}".encode())
    h.update(_code(fun).encode())
    h.update(_sources()[0].encode())
    h.update(repr(statics).encode())
    h.update(_stable(signature).encode())
    h.update(_stable(jit_info).encode())
    h.update(repr([_stable(pjit.convert_to_metaty(a)) for a in dynargs]).encode())
    h.update(repr(sorted((k, v) for k, v in os.environ.items() if k.startswith("PTYRO_"))).encode())
    h.update(_environment().encode())
    return h.hexdigest(), dynargs


def _canon(value: Any, depth: int = 0) -> str | None:
    """A text that says all there is to a static argument (None: no such text): numbers,
    strings, None, dtypes and enum members by their repr; tuples, lists, dicts, and dataclass,
    attrs and ptyro_core records field by field (each field's value itself so written). An
    object of any other kind (whose repr may be a summary) has none."""
    import dataclasses
    import enum

    import numpy as np

    if depth > 8:
        return None
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.dtype, enum.Enum)):
        return f"{type(value).__name__}:{value!r}"
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if isinstance(value, dict):
        pairs = [(_canon(k, depth + 1), _canon(v, depth + 1)) for k, v in value.items()]
        if any(k is None or v is None for k, v in pairs):
            return None
        return f"{kind}(" + ",".join(sorted(f"{k}:{v}" for k, v in pairs)) + ")"
    if isinstance(value, (tuple, list, frozenset)):
        items = [_canon(v, depth + 1) for v in value]
        if any(i is None for i in items):
            return None
        texts = [i for i in items if i is not None]
        return f"{kind}(" + ",".join(sorted(texts) if isinstance(value, frozenset) else texts) + ")"
    cls = type(value)
    if dataclasses.is_dataclass(value):
        names = [f.name for f in dataclasses.fields(value)]
    elif hasattr(cls, "__attrs_attrs__"):
        names = [f.name for f in cls.__attrs_attrs__]
    else:
        return None
    parts = [_canon(getattr(value, n), depth + 1) for n in names]
    if any(p is None for p in parts):
        return None
    return f"{cls.__module__}.{cls.__qualname__}(" + ",".join(f"{n}={p}" for n, p in zip(names, parts)) + ")"


def _runtime_plugins() -> bool:
    """Whether a plugin was registered at run time in the process-wide registry: a function of
    ours may look its components up by name while it is traced, and their code (a notebook's,
    a script's) is in no fingerprint, so the key without tracing could not tell an edited one
    from the one stored. The key after tracing still can (the traced program is in it)."""
    from ptyro_core import registry

    return bool(registry.get_registry.cache_info().currsize and registry.get_registry().runtime_plugins)


def _cacheable_now() -> bool:
    from jax._src import config, xla_bridge

    return not (config.enable_pgle.value or config.use_simplified_jaxpr_constants.value or xla_bridge.process_count() > 1)


def _cpp_pjit(fun: Any, jit_info: Any) -> Any:
    """``pjit._cpp_pjit`` (JAX 0.10.2) with a look-up before tracing for eligible functions."""
    from jax._src import pjit

    original = _state["cpp_pjit"]
    if original is None or not _eligible(fun):
        return (original or pjit._cpp_pjit)(fun, jit_info)
    try:
        return _cpp_pjit_looking_up(fun, jit_info)
    except Exception:  # noqa: BLE001 - JAX's internals not as expected: its own function
        _stats["errors"] += 1
        return original(fun, jit_info)


def _cpp_pjit_looking_up(fun: Any, jit_info: Any) -> Any:
    """The body of ``pjit._cpp_pjit`` (JAX 0.10.2; its names taken from ``pjit``'s namespace),
    its ``cache_miss`` looking the call up before tracing."""
    from jax._src import pjit as J

    @J.api_boundary
    def cache_miss(*args: Any, **kwargs: Any) -> Any:
        found, key = _untraced_call(fun, jit_info, args, kwargs)
        if found is not None:
            return found
        if J.config.no_tracing.value:
            raise RuntimeError(f"re-tracing function {jit_info.fun_sourceinfo} for `jit`, but 'no_tracing' is set")
        p, args_flat = J._infer_params(fun, jit_info, args, kwargs)
        metas = [J.convert_to_metaty(a) for a in args_flat] if key is not None else []  # before the call (it may donate them)
        (outs, out_flat, out_tree, args_flat, jaxpr, executable, pgle_profiler, const_args) = J._run_python_pjit(p, args_flat, fun, args, kwargs)
        _link(key, p, metas, executable, const_args)
        fast = J._get_fastpath_data(executable, out_tree, args_flat, out_flat, jaxpr.effects, jaxpr.consts, pgle_profiler, const_args)
        return outs, fast, J._need_to_rebuild_with_fdo(pgle_profiler)

    cache_key = J.pxla.JitGlobalCppCacheKeys(**{k: getattr(jit_info, k) for k in _CPP_CACHE_KEYS})
    cache = J.config.jax_jit_cpp_cache_obj.value
    cpp_cache = cache if (cache is not None and J.core.trace_state_clean()) else J._get_cpp_global_cache(cache_key.contains_explicit_attributes)
    cpp_pjit_f = J._jax.pjit(
        J.fun_name(fun),
        fun,
        cache_miss,
        jit_info.static_argnums,
        jit_info.static_argnames,
        cache_key,
        J.tree_util.dispatch_registry,
        J.pxla.cc_shard_arg,
        cpp_cache,
    )
    cpp_pjitted_f = J.wraps(fun)(cpp_pjit_f)
    cpp_pjitted_f._fun = fun
    cpp_pjitted_f._jit_info = jit_info
    cls = type(cpp_pjitted_f)
    cls.clear_cache = J.jit_evict_fn
    cls.lower = J.jit_lower
    cls.trace = J.jit_trace
    cls.eval_shape = J.jit_eval_shape
    return cpp_pjitted_f


def _untraced_call(fun: Any, jit_info: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, str | None]:
    """``((outputs, fast-path data, False), key)`` from the stored executable, or ``(None,
    key)`` where there is none (JAX's path; key None: not cacheable)."""
    where = _state["dir"]
    if where is None:
        return None, None
    try:
        found = _untraced_key(fun, jit_info, args, kwargs)
        if found is None:
            return None, None
        key, dynargs = found
        exe, out_tree, t = _linked(where, key)
        if exe is None:
            return None, key
    except Exception:  # noqa: BLE001 - anything unusual: traced as usual
        _stats["errors"] += 1
        return None, None
    from jax import monitoring
    from jax._src import pjit
    from jax.tree_util import tree_unflatten

    _stats["hits"] += 1
    _stats["untraced"] += 1
    monitoring.record_event_duration_secs(LOAD_EVENT, time.perf_counter() - t)
    out_flat = exe.unsafe_call(*dynargs)
    outs = tree_unflatten(out_tree, out_flat)
    return (outs, pjit._get_fastpath_data(exe, out_tree, dynargs, out_flat, (), (), None, []), False), key


def _jit_lower(jit_func: Any, *args: Any, **kwargs: Any) -> Any:
    """``jitted.lower(...)``: for an eligible function whose program is linked, a lowering that
    is made only if asked for more than ``compile()``; JAX's own otherwise."""
    original = _state["jit_lower"]
    fun, where = getattr(jit_func, "_fun", None), _state["dir"]
    if where is not None and fun is not None and _eligible(fun):
        try:
            found = _untraced_key(fun, jit_func._jit_info, args, kwargs)
            if found is not None and _linked(where, found[0])[0] is not None:
                return _LazyLowered(original, jit_func, args, kwargs)
        except Exception:  # noqa: BLE001 - JAX's own lowering
            _stats["errors"] += 1
    return original(jit_func, *args, **kwargs)


class _LazyLowered:
    """What ``.lower()`` returns for a program in the cache: ``compile()`` (with JAX's defaults)
    gives a callable that calls the jitted function (whose call runs the executable the look-up
    has just loaded, untraced); anything else makes the real lowering (and compilation) first."""

    def __init__(self, lower: Any, jit_func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._lower, self._func, self._args, self._kwargs = lower, jit_func, args, kwargs
        self._real: Any = None

    def _lowered(self) -> Any:
        if self._real is None:
            self._real = self._lower(self._func, *self._args, **self._kwargs)
        return self._real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lowered(), name)

    def compile(self, compiler_options: Any = None, **kw: Any) -> Any:
        if compiler_options is not None or kw:
            return self._lowered().compile(compiler_options, **kw)
        return _LazyCompiled(self)


class _LazyCompiled:
    """The compiled form of a :class:`_LazyLowered`: called, the jitted function; anything else
    from JAX's real ``Compiled``."""

    def __init__(self, lowered: _LazyLowered) -> None:
        self._from = lowered
        self._real: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Called as JAX's ``Compiled`` is, without the static arguments: they are put back."""
        lowered = self._from
        info = lowered._func._jit_info
        rest = iter(args)
        full = [a if i in info.static_argnums else next(rest) for i, a in enumerate(lowered._args)] + list(rest)
        static = {k: v for k, v in lowered._kwargs.items() if k in info.static_argnames}
        return lowered._func(*full, **static, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if self._real is None:
            self._real = self._from._lowered().compile()
        return getattr(self._real, name)


def _linked(where: str, key: str) -> tuple[Any, Any, float]:
    """(the executable the link ``key`` points to, its output tree, when the look-up started);
    (None, None, ...) where there is no link or no executable."""
    t = time.perf_counter()
    link = Path(where) / (key + _LINK)
    if not link.exists():
        return None, None, t
    program, out_tree, out_avals = pickle.loads(link.read_bytes())
    exe = _memory.get(program) or _load(where, program, out_avals)
    if exe is not None:
        _remember(program, exe)
    return exe, out_tree, t


def _link(key: str | None, p: Any, metas: list[Any], executable: Any, const_args: Any) -> None:
    """After a traced call: where its executable is stored, write the link from the untraced
    ``key`` to it (the program's key, the output tree, the output types)."""
    where = _state["dir"]
    if where is None or key is None or const_args or p.consts or executable is None:
        return
    try:
        from jax._src.interpreters import mlir

        params = dict(p.params, lowering_platforms=None, lowering_parameters=mlir.LoweringParameters(), pgle_profiler=None)
        program = _key(metas, params)
        if program is None or not (Path(where) / (program + _SUFFIX)).exists():
            return
        out_avals = [str(a) for a in p.params["jaxpr"].out_avals]
        _write(Path(where) / (key + _LINK), pickle.dumps((program, p.out_tree, out_avals)))
    except Exception:  # noqa: BLE001 - no link: the next run traces it
        _stats["errors"] += 1

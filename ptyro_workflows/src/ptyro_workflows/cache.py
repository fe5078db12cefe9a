"""JAX's persistent compilation cache, on by default for the ``ptyro`` command.

A second run of the same shapes (the same configuration, or the demo twice) loads the compiled
programs from disk instead of compiling them again. The cache lives in the user's cache
directory (``$XDG_CACHE_HOME/ptyrodactyl/jax``, default ``~/.cache/ptyrodactyl/jax``);
``PTYRO_JAX_CACHE`` switches it (``0``/``off``: no cache; a directory: that directory) and
``ptyro ... --no-jax-cache`` turns it off for one run. Which cache a run used is recorded in its
provenance (``jax_compilation_cache``).

With the compilation cache, our own executable cache (:mod:`ptyro_core.exec_cache`) is switched
on in its ``executables`` subdirectory: a warm start then skips the lowering of each program
too, not only its compilation (and the top-level jitted functions of our packages are not traced
again: ``PTYRO_EXEC_CACHE_TRACE=1`` traces them as usual). ``PTYRO_EXEC_CACHE=0`` turns that
cache off alone; which it used is recorded as ``executable_cache``.
"""

import os
from pathlib import Path

__all__ = ["default_cache_dir", "enable_compilation_cache", "cache_record", "point_jax_cache"]

_OFF = {"0", "off", "false", "no", "none", ""}
_state: dict[str, str] = {"jax_compilation_cache": "off", "executable_cache": "off"}


def default_cache_dir() -> Path | None:
    """The cache directory ``PTYRO_JAX_CACHE`` asks for (None: switched off)."""
    env = os.environ.get("PTYRO_JAX_CACHE")
    if env is not None:
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ptyrodactyl" / "jax"


def enable_compilation_cache(path: str | Path | None = None, *, enabled: bool = True) -> str:
    """Point JAX's persistent compilation cache at ``path`` (default :func:`default_cache_dir`)
    and cache every compiled program (no minimum compile time). Returns what is recorded in the
    provenance: the directory, or ``"off"``. Call before the first compilation."""
    where = Path(path) if path is not None else default_cache_dir()
    from ptyro_core import exec_cache

    _state["executable_cache"] = "off"
    exec_cache.uninstall()
    if not enabled or where is None:
        return _jax_cache_off()
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:  # a read-only home: run without the cache rather than fail
        return _jax_cache_off()
    # compiled programs are code: never load them from a directory another user owns or can write
    import warnings

    from ptyro_core import PtyroValueError
    from ptyro_core.files import check_private

    try:
        check_private(where, where)
    except PtyroValueError as e:
        warnings.warn(f"{e}; running without the compilation cache", stacklevel=2)
        return _jax_cache_off()
    import jax

    point_jax_cache(str(where))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _state["jax_compilation_cache"] = str(where)
    _state["executable_cache"] = _enable_executable_cache(where / "executables")
    return str(where)


def point_jax_cache(where: str | None) -> None:
    """Point JAX's persistent compilation cache at directory ``where`` (None: off), if JAX is
    imported (or ``where`` is a directory). JAX decides once per process whether its cache is
    used, and opens it once, so a change after the first compilation also resets that decision:
    without it an in-process run with the cache off (``main([..., "--no-jax-cache"])`` after a
    cached one) recorded "off" and still wrote to the earlier directory."""
    import sys

    if where is None and "jax" not in sys.modules:
        return
    import jax
    from jax._src import compilation_cache

    if jax.config.jax_compilation_cache_dir != where:  # type: ignore[attr-defined]  # a config attribute JAX makes at run time
        jax.config.update("jax_compilation_cache_dir", where)
        compilation_cache.reset_cache()


def _jax_cache_off() -> str:
    point_jax_cache(None)
    _state["jax_compilation_cache"] = "off"
    return "off"


def _enable_executable_cache(where: Path) -> str:
    """Our executable cache in ``where`` unless ``PTYRO_EXEC_CACHE`` switches it off; returns
    the directory or ``"off"``."""
    from ptyro_core import exec_cache

    if os.environ.get("PTYRO_EXEC_CACHE", "1").strip().lower() in _OFF:
        return "off"
    try:
        where.mkdir(mode=0o700, exist_ok=True)
    except OSError:  # run with JAX's cache alone
        return "off"
    try:
        return exec_cache.install(where)
    except Exception:  # noqa: BLE001 - a JAX whose internals differ: JAX's cache alone
        exec_cache.uninstall()
        return "off"


def cache_record() -> dict[str, str]:
    """``{"jax_compilation_cache": ..., "executable_cache": ...}`` (each a directory or
    ``"off"``) for a provenance record."""
    return dict(_state)

"""Back ends by name: ``backend = "auto" | "xla" | NAME``, resolved outside ``jit`` (shared by the
simulation's multislice far field, :mod:`ptyro_simul.backend`, and the reconstructions' far
fields of single-slice windows, :mod:`ptyro_invert.recon`).

``"xla"``: the jitted JAX path (every device). ``NAME``: a back end registered by a plugin
through the ``ptyro_register_backends`` hook (kind ``backend``, e.g. ``native``, the CPU kernels
of the ptyro-native distribution); it must be able to run here and offer what the caller needs,
or a clear error says why. ``"auto"`` (the default): on a single CPU device, the first
registered back end (by name) that offers it and can run the waves; otherwise, and everywhere
else, XLA. When no back end could serve a CPU run, the caller says so once per process and runs
XLA (same results, slower).
"""

import threading
import warnings
from typing import Any

import jax

from ptyro_core.errors import PtyroValueError, UnknownComponentError
from ptyro_core.protocols import FarFieldBackend
from ptyro_core.registry import get, list_components

__all__ = ["XLA", "resolve_backend", "check_backend_name"]

#: the name of the built-in JAX path
XLA = "xla"
#: set once the library has said that no back end could serve a CPU run (once per process,
#: whichever caller found none first)
_noted = threading.Event()
_lock = threading.Lock()


def check_backend_name(backend: Any) -> str:
    """``backend`` as a lower-case name (``"auto"``, ``"xla"`` or a registered back end's), or a
    clear error; ``None`` is ``"auto"``."""
    if backend is None:
        return "auto"
    if not isinstance(backend, str) or not backend.strip():
        raise PtyroValueError(f"backend: expected 'auto', 'xla' or a registered back end's name, got {backend!r}")
    return backend.strip().lower()


def _single_cpu_device() -> bool:
    return jax.default_backend() == "cpu" and jax.device_count() == 1


def _registered() -> list[str]:
    return sorted(c.name for c in list_components("backend"))


def resolve_backend(backend: Any, dtype: Any, *, windowed: bool = False, kernel: bool = True, needs: type | None = None,
                    what: str = "far-field", who: str = "ptyro_simul", single_device: bool = True) -> tuple[str, FarFieldBackend | None]:  # fmt: skip
    """``(name, back end)`` that runs ``what`` for waves of ``dtype``: ``("xla", None)`` for the
    JAX path. ``kernel``: whether the propagator declares a kernel (multislice); ``windowed``: a
    windowed run; ``needs``: a protocol the back end must satisfy as well (e.g.
    :class:`~ptyro_core.protocols.WindowFarFields`); ``single_device``: whether the run is on
    one device (``auto`` chooses a back end only then, and on a CPU); ``who`` says so once when
    ``auto`` finds none (once per process for all callers)."""
    name = check_backend_name(backend)
    if name == XLA:
        return XLA, None
    if name == "auto":
        if not kernel or not single_device or not _single_cpu_device():
            return XLA, None
        reasons = []
        for candidate in _registered():
            obj = get("backend", candidate)
            if needs is not None and not isinstance(obj, needs):
                continue
            why = obj.unavailable(dtype, windowed)
            if why is None:
                return candidate, obj
            reasons.append(f"{candidate}: {why}")
        with _lock:
            first = not _noted.is_set()
            _noted.set()
        if first:
            detail = "; ".join(reasons) if reasons else "none is installed (uv sync --group native, or pip install plugins/ptyro-native)"
            warnings.warn(f"{who}: no {what} back end for this CPU run ({detail}); running XLA (same results, slower)", RuntimeWarning, stacklevel=3)
        return XLA, None
    if not kernel:
        raise PtyroValueError(f"backend: {name!r} runs the far field of kernel propagators only, and this propagator declares no kernel; use 'auto' or 'xla'")
    try:
        obj = get("backend", name)
    except UnknownComponentError as e:  # the registry lists the plugins' names: add the built-in two
        raise UnknownComponentError(f"backend: {e}; or 'auto' (the default) or 'xla'") from None
    if needs is not None and not isinstance(obj, needs):
        raise PtyroValueError(f"backend: {name!r} does not run the {what} ({needs.__name__}); use 'auto' or 'xla'")
    if not single_device:
        raise PtyroValueError(f"backend: {name!r} runs on one device, and this run has several; use 'auto' or 'xla'")
    why = obj.unavailable(dtype, windowed)
    if why is not None:
        raise PtyroValueError(f"backend: {name!r} cannot run here: {why}; use 'auto' or 'xla'")
    return name, obj

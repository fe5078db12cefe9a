"""Back ends of the multislice far field: ``backend = "auto" | "xla" | NAME``, resolved outside
``jit`` into the plan of a simulation (and recorded in its provenance).

``"xla"``: the jitted JAX path (every device). ``NAME``: a far-field back end registered by a
plugin through the ``ptyro_register_backends`` hook (e.g. ``native``, the CPU kernel of the
ptyro-native distribution); it must be able to run here, or a clear error says why.
``"auto"`` (the default): on a single CPU device, the first registered back end that can run the
waves (by name); otherwise, and everywhere else, XLA. When no back end could serve a CPU run,
the library says so once per process and runs XLA (same results, slower). Only kernel
propagators (:class:`~ptyro_core.protocols.KernelPropagator`) have a far field a back end can
run; with any other propagator ``auto`` is XLA and a named back end is an error.
"""

import threading
import warnings
from typing import Any

import jax

import ptyro_core
from ptyro_core import PtyroValueError
from ptyro_core.protocols import FarFieldBackend

__all__ = ["XLA", "resolve_backend", "check_backend_name"]

#: the name of the built-in JAX path
XLA = "xla"
_noted = threading.Event()


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
    return sorted(c.name for c in ptyro_core.list_components("backend"))


def resolve_backend(backend: Any, dtype: Any, *, windowed: bool, kernel: bool) -> tuple[str, FarFieldBackend | None]:
    """``(name, back end)`` that runs the far field of waves of ``dtype``: ``("xla", None)`` for the
    JAX path. ``kernel``: whether the propagator declares a kernel; ``windowed``: a windowed run."""
    name = check_backend_name(backend)
    if name == XLA:
        return XLA, None
    if name == "auto":
        if not kernel or not _single_cpu_device():
            return XLA, None
        reasons = []
        for candidate in _registered():
            obj = ptyro_core.get("backend", candidate)
            why = obj.unavailable(dtype, windowed)
            if why is None:
                return candidate, obj
            reasons.append(f"{candidate}: {why}")
        if not _noted.is_set():
            _noted.set()
            detail = "; ".join(reasons) if reasons else "none is installed (uv sync --group native, or pip install plugins/ptyro-native)"
            warnings.warn(f"ptyro_simul: no far-field back end for this CPU run ({detail}); running XLA (same results, slower)",
                          RuntimeWarning, stacklevel=3)  # fmt: skip
        return XLA, None
    if not kernel:
        raise PtyroValueError(f"backend: {name!r} runs the far field of kernel propagators only, and this propagator declares no kernel; use 'auto' or 'xla'")
    obj = ptyro_core.get("backend", name)
    why = obj.unavailable(dtype, windowed)
    if why is not None:
        raise PtyroValueError(f"backend: {name!r} cannot run here: {why}; use 'auto' or 'xla'")
    return name, obj

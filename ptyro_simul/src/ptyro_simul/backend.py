"""Back ends of the multislice far field: ``backend = "auto" | "xla" | NAME``, resolved outside
``jit`` into the plan of a simulation (and recorded in its provenance); the rules are
:mod:`ptyro_core.backends`' (shared with the reconstructions).

``"xla"``: the jitted JAX path (every device). ``NAME``: a far-field back end registered by a
plugin through the ``ptyro_register_backends`` hook (e.g. ``native``, the CPU kernel of the
ptyro-native distribution); it must be able to run here, or a clear error says why.
``"auto"`` (the default): on a single CPU device, the first registered back end that can run the
waves (by name); otherwise, and everywhere else, XLA. When no back end could serve a CPU run,
the library says so once per process and runs XLA (same results, slower). Only kernel
propagators (:class:`~ptyro_core.protocols.KernelPropagator`) have a far field a back end can
run; with any other propagator ``auto`` is XLA and a named back end is an error.
"""

from typing import Any

from ptyro_core import backends
from ptyro_core.backends import XLA, check_backend_name
from ptyro_core.protocols import FarFieldBackend

__all__ = ["XLA", "resolve_backend", "check_backend_name"]


def resolve_backend(backend: Any, dtype: Any, *, windowed: bool, kernel: bool) -> tuple[str, FarFieldBackend | None]:
    """``(name, back end)`` that runs the far field of waves of ``dtype``: ``("xla", None)`` for the
    JAX path. ``kernel``: whether the propagator declares a kernel; ``windowed``: a windowed run."""
    return backends.resolve_backend(backend, dtype, windowed=windowed, kernel=kernel, who="ptyro_simul")

"""The native CPU far field of multislice: one XLA FFI kernel (``cpp/fresnel.cc``, compiled when
this distribution is installed) that runs the whole slice loop and the detector's transform of a
batch of waves, on the full grid or in windows; and the far fields of a reconstruction's windows
on a single-slice object with their gradient (``cpp/window.cc``:
:class:`~ptyro_core.protocols.WindowFarFields`, what :mod:`ptyro_invert.forward` computes with XLA).

XLA runs every elementwise multiplication of the slice loop (t·ψ in real space, k·Ψ in Fourier
space) as its own pass over memory between its FFTs, and cannot fuse them into the FFTs. The
kernel splits each 2D FFT into its row and column passes and does the multiplications on the
lines while they are in registers, so a slice is two passes over the wave instead of six; and it
skips the columns that the 2/3-Nyquist band limit of the kernels zeroes. It computes exactly
what :func:`ptyro_simul.multislice.fresnel_far_field` computes (complex64; agreement to float32
rounding is tested), with the vendored pocketfft header (BSD-3-Clause, ``cpp/LICENSE.pocketfft.md``).

Differentiable: the derivative is that of the XLA path (``jax.custom_jvp``), so ``jax.grad`` and
``jax.jvp`` through a simulation give the same results on either back end. Nothing is compiled
when the library runs: the shared library is loaded (``ctypes``) and registered with XLA on
first use; if it cannot be, :meth:`NativeBackend.unavailable` says why and ``backend="auto"``
runs XLA.
"""

import ctypes
import functools
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from ptyro_core.protocols import FarFieldBackend

__all__ = ["LIBRARY", "NativeBackend", "load", "native"]

#: the kernel's shared library, installed beside this module
LIBRARY = Path(__file__).with_name("ptyro_fresnel.so")
TARGET = "ptyro_fresnel_far_field"
WINDOWED = "ptyro_fresnel_far_field_windowed"
#: the reconstructions' targets (cpp/window.cc): FFI target name -> exported handler symbol
RECON_TARGETS = {
    "ptyro_window_far_fields": "PtyroWindowFarFields",
    "ptyro_window_far_fields_add": "PtyroWindowFarFieldsAdd",
    "ptyro_window_far_fields_add_each": "PtyroWindowFarFieldsAddEach",
}
_lock = threading.Lock()
_state: dict[str, Any] = {}


def load() -> str | None:
    """Load the installed kernel and register its FFI targets with XLA (once per process):
    None when done, else why it could not be (remembered)."""
    with _lock:
        if "error" not in _state:
            try:
                lib = ctypes.cdll.LoadLibrary(str(LIBRARY))
                jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.PtyroFresnelFarField), platform="cpu")
                jax.ffi.register_ffi_target(WINDOWED, jax.ffi.pycapsule(lib.PtyroFresnelFarFieldWindowed), platform="cpu")
                for target, symbol in RECON_TARGETS.items():
                    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
                _state.update(error=None, lib=lib)
            except Exception as exc:  # noqa: BLE001 - any failure means: this back end is unavailable
                _state.update(error=f"the kernel {LIBRARY} could not be loaded ({type(exc).__name__}: {exc})")
        return _state["error"]


class NativeBackend(FarFieldBackend):
    """The far-field back end ``native``: complex64 waves on the CPU, full grid or windowed; and
    the reconstructions' window far fields (:class:`~ptyro_core.protocols.WindowFarFields`)."""

    def unavailable(self, dtype: Any, windowed: bool) -> str | None:
        if jnp.dtype(dtype) != jnp.complex64:
            return f"complex64 waves only, got {jnp.dtype(dtype).name}"
        if jax.default_backend() != "cpu":
            return f"a CPU kernel, and the default device is a {jax.default_backend()}"
        return load()

    def __call__(self, waves: Array, head: tuple[Array, Array], last: tuple[Array, Array], offsets: Array | None = None) -> Array:
        """|FFT(exit wave)|² · mask of ``waves`` (..., nx, ny) complex64 (see
        :class:`~ptyro_core.protocols.FarFieldBackend`)."""
        args = (waves, head[0], last[0], head[1], last[1]) + (() if offsets is None else (offsets,))
        return _kernel(offsets is not None)(*args)

    def window_far_fields(self, obj: Array, probes: Array, group: Array, start: Array) -> Array:
        """The centred unitary far fields (b, m, nx, ny) of ``probes[group[i]]`` (of (g, m, nx, ny))
        times the window of the single-slice object (1, ox, oy) from pixel ``start[i]``: what
        :func:`ptyro_invert.forward.far_fields` computes, differentiable (its gradient is
        :meth:`window_far_fields_add`'s)."""
        return _window_far_fields(obj, probes, jnp.asarray(group, jnp.int32), jnp.asarray(start, jnp.int32))

    def window_far_fields_add(self, obj: Array, probes: Array, group: Array, start: Array, ct: Array, go: Array,
                              gp: Array | None) -> tuple[Array, Array]:  # fmt: skip
        """The gradient of :meth:`window_far_fields` for the cotangent ``ct`` (b, m, nx, ny) of its far
        fields (JAX's convention, no conjugates) added into ``go`` (1, ox, oy) and ``gp``
        (g, m, nx, ny) in place; ``gp`` None: a probe per position (``group`` the identity), whose
        gradient (b, m, nx, ny) is returned. Not itself differentiable (it is a gradient)."""
        return _window_add(obj, probes, jnp.asarray(group, jnp.int32), jnp.asarray(start, jnp.int32), ct, go, gp)

    def __repr__(self) -> str:
        return "native"


def _loaded() -> None:
    """Raise, naming why, where the kernels could not be loaded (a caller that skipped
    :meth:`NativeBackend.unavailable`)."""
    why = load()
    if why is not None:
        raise RuntimeError(f"ptyro_native: {why}")


def _centring(shape: tuple[int, ...]) -> Array:
    from ptyro_core.conventions import centring

    # real (±1) for even sizes: the kernel takes it as complex64 in every case
    return jnp.asarray(centring((int(shape[-2]), int(shape[-1])), "complex64"), jnp.complex64)


def _window_add(obj: Array, probes: Array, group: Array, start: Array, ct: Array, go: Array, gp: Array | None) -> tuple[Array, Array]:
    _loaded()
    args = (obj, probes, group, start, _centring(probes.shape), ct, go)
    if gp is None:
        out = (jax.ShapeDtypeStruct(go.shape, go.dtype), jax.ShapeDtypeStruct(ct.shape, ct.dtype))
        return tuple(jax.ffi.ffi_call("ptyro_window_far_fields_add_each", out, input_output_aliases={6: 0})(*args))  # type: ignore[return-value]
    out = (jax.ShapeDtypeStruct(go.shape, go.dtype), jax.ShapeDtypeStruct(gp.shape, gp.dtype))
    return tuple(jax.ffi.ffi_call("ptyro_window_far_fields_add", out, input_output_aliases={6: 0, 7: 1})(*args, gp))  # type: ignore[return-value]


@jax.custom_vjp
def _window_far_fields(obj: Array, probes: Array, group: Array, start: Array) -> Array:
    _loaded()
    out = jax.ShapeDtypeStruct((group.shape[0], probes.shape[1]) + probes.shape[2:], jnp.complex64)
    return jax.ffi.ffi_call("ptyro_window_far_fields", out, vmap_method="sequential")(obj, probes, group, start, _centring(probes.shape))


def _window_fwd(obj: Array, probes: Array, group: Array, start: Array) -> tuple[Array, tuple]:
    return _window_far_fields(obj, probes, group, start), (obj, probes, group, start)


def _window_bwd(res: tuple, ct: Array) -> tuple:
    obj, probes, group, start = res
    # the far fields are linear in the object and in the probes (holomorphic): JAX's VJP is the
    # transpose, no conjugates, which the add kernel computes (into zeroed sums here)
    go, gp = _window_add(obj, probes, group, start, ct, jnp.zeros_like(obj), jnp.zeros_like(probes))
    return go, gp, None, None


_window_far_fields.defvjp(_window_fwd, _window_bwd)


#: the ``native`` back end component
native = NativeBackend()


@functools.lru_cache(maxsize=2)
def _kernel(windowed: bool) -> Callable[..., Array]:
    """The kernel (full grid or windowed) as a function of (waves, trans_head, trans_last,
    kernels, mask[, offsets]), with the derivative of the XLA path with respect to its first five
    arguments (the offsets are integer data)."""
    from ptyro_simul.multislice import crop_windows, fresnel_far_field

    target = WINDOWED if windowed else TARGET

    def reference(w: Array, th: Array, tl: Array, k: Array, m: Array, *offsets: Array) -> Array:
        crop = crop_windows(offsets[0], tl.shape, w.shape[-2:]) if offsets else None
        return fresnel_far_field(w, (th, k), (tl, m), crop)

    @jax.custom_jvp
    def f(*args: Array) -> Array:
        _loaded()
        out = jax.ShapeDtypeStruct(args[0].shape, jnp.float32)
        return jax.ffi.ffi_call(target, out, vmap_method="sequential")(*args)

    @f.defjvp
    def f_jvp(primals: tuple, tangents: tuple) -> tuple[Array, Array]:
        rest = primals[5:]
        _, tangent = jax.jvp(lambda *xs: reference(*xs, *rest), primals[:5], tangents[:5])
        return f(*primals), tangent

    return f

"""The native CPU path of the full-grid multislice far field: one XLA FFI kernel (``_native/fresnel.cc``)
that runs the whole slice loop and the detector's transform of a batch of waves.

XLA runs every elementwise multiplication of the slice loop (t·ψ in real space, k·Ψ in Fourier
space) as its own pass over memory between its FFTs, and cannot fuse them into the FFTs: on a CPU
that costs ~20 % over the time of the FFTs alone (``benchmarks/profile_sim.py``). The kernel splits
each 2D FFT into its row and column passes and does the multiplications on the lines while they
are in registers, so a slice is two passes over the wave instead of six; and it skips the columns
that the 2/3-Nyquist band limit of the kernels zeroes (a third of the column transforms). It
computes exactly what :func:`ptyro_simul.multislice._fresnel_far_field` computes (complex64;
agreement to float32 rounding is tested).

Built on first use with the system C++ compiler (``$CXX``, else ``c++`` / ``g++``; ~10 s) against
the FFI headers of the installed jaxlib and the vendored pocketfft header (BSD-3-Clause, see
``_native/LICENSE.pocketfft.md``), into ``$PTYRO_CACHE_DIR`` (default
``~/.cache/ptyrodactyl``) under a key of the sources, jaxlib's version, the compiler and the CPU,
so it is built once per machine. If anything fails (no compiler, a compile error) the library
warns once, saying why, and uses the XLA path: the results are the same, only slower.

``PTYRO_NATIVE``: ``auto`` (default) uses the kernel on a single CPU device; ``0`` never;
``1`` on any CPU setup (with several devices XLA then runs the kernel on whole, unsharded
batches). Differentiable: the derivative is that of the XLA path (``jax.custom_jvp``), so
``jax.grad`` and ``jax.jvp`` through a simulation give the same results either way.
"""

import ctypes
import fcntl
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from ptyro_core import PtyroValueError
from ptyro_core.files import check_private

__all__ = ["available", "build", "cache_dir", "fresnel_far_field", "mode", "use_native"]

_SRC = Path(__file__).parent / "_native"
_TARGET = "ptyro_fresnel_far_field"
_WINDOWED = "ptyro_fresnel_far_field_windowed"
_lock = threading.Lock()
_state: dict[str, Any] = {}


def mode() -> str:
    """``PTYRO_NATIVE`` read now: ``"auto"``, ``"0"`` or ``"1"``."""
    value = os.environ.get("PTYRO_NATIVE", "auto").strip().lower() or "auto"
    if value in ("0", "off", "false", "no"):
        return "0"
    if value in ("1", "on", "true", "yes"):
        return "1"
    if value != "auto":
        raise PtyroValueError(f"PTYRO_NATIVE: expected auto, 0 or 1, got {value!r}")
    return "auto"


def cache_dir() -> Path:
    """Where the built kernel is kept: ``$PTYRO_CACHE_DIR``, else ``$XDG_CACHE_HOME/ptyrodactyl``,
    else ``~/.cache/ptyrodactyl``."""
    if os.environ.get("PTYRO_CACHE_DIR"):
        return Path(os.environ["PTYRO_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ptyrodactyl"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _key(cxx: str) -> str:
    h = hashlib.sha256()
    for f in sorted(_SRC.glob("*")):
        if f.suffix in (".cc", ".h"):
            h.update(f.name.encode() + f.read_bytes())
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60, check=False).stdout
    for part in (jax.__version__, getattr(jax.lib, "__version__", ""), version, platform.machine(), _cpu_flags()):
        h.update(str(part).encode())
    return h.hexdigest()[:16]


def build() -> Path:
    """The kernel's shared library, built now if this machine has none for these sources (under a
    file lock, into a temporary file renamed into place: nothing half-written is ever loaded).
    Raises RuntimeError saying why when it cannot be built."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found ($CXX, c++, g++ or clang++)")
    out_dir = cache_dir() / f"native-{_key(cxx)}"
    lib = out_dir / "fresnel.so"
    if lib.exists():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    for d in (cache_dir(), out_dir):  # code is loaded from here: writable by this user only (a umask of 002 too)
        if d.stat().st_uid == os.geteuid():
            os.chmod(d, d.stat().st_mode & ~0o022)
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if lib.exists():  # built by another process while this one waited
            return lib
        print(f"ptyro: building the native multislice kernel for this machine (once; ~10 s) in {out_dir}", file=sys.stderr, flush=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
        os.close(fd)
        try:
            _compile(cxx, tmp)
            os.chmod(tmp, 0o755)
            os.replace(tmp, lib)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return lib


def _compile(cxx: str, out: str, flags: tuple[str, ...] = ("-march=native",)) -> None:
    """Compile the kernel into ``out`` (``flags``: the instruction set; the tests also build the
    portable SIMD and scalar paths with ``-march=x86-64`` and ``-DPOCKETFFT_NO_VECTORS``)."""
    cmd = [cxx, "-O3", *flags, "-std=c++17", "-shared", "-fPIC", "-w",
           f"-I{jax.ffi.include_dir()}", f"-I{_SRC}", str(_SRC / "fresnel.cc"), "-o", out]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    if res.returncode != 0:
        tail = "\n".join(res.stderr.strip().splitlines()[-12:])
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {res.returncode}):\n{tail}")


def available() -> bool:
    """Whether the kernel is built and registered with XLA (building it on the first call; a
    failure is warned about once and remembered for the process)."""
    with _lock:
        if "ok" not in _state:
            try:
                lib = ctypes.cdll.LoadLibrary(str(check_private(build(), cache_dir())))  # never code others can replace
                jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(lib.PtyroFresnelFarField), platform="cpu")
                jax.ffi.register_ffi_target(_WINDOWED, jax.ffi.pycapsule(lib.PtyroFresnelFarFieldWindowed), platform="cpu")
                _state.update(ok=True, lib=lib)
            except Exception as exc:  # noqa: BLE001 - any failure means: use the XLA path
                _state.update(ok=False, error=f"{type(exc).__name__}: {exc}")
                warnings.warn(
                    f"ptyro_simul.native: the native multislice kernel is unavailable, using the XLA path "
                    f"(same results, slower): {_state['error']}",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return bool(_state["ok"])


def use_native(dtype: Any) -> bool:
    """Whether a Fresnel far field of waves of ``dtype`` should run on the kernel now:
    complex64 waves, ``PTYRO_NATIVE`` not 0, the default backend a CPU (with ``auto``: a single
    device), and the kernel available. Decided outside jit (a static choice)."""
    m = mode()
    if m == "0" or jnp.dtype(dtype) != jnp.complex64 or jax.default_backend() != "cpu":
        return False
    if m == "auto" and jax.device_count() != 1:
        return False
    return available()


def fresnel_far_field(waves: Array, head: tuple[Array, Array], last: tuple[Array, Array], offsets: Array | None = None) -> Array:
    """|FFT(exit wave)|² · mask of ``waves`` (..., nx, ny) complex64 on the kernel: what
    :func:`ptyro_simul.multislice._fresnel_far_field` computes, with its derivative (``head``,
    ``last`` as there). ``offsets`` (b, 2) int32: each position's window starts in the potential
    (the waves are windows of it, b positions times the modes); None on the full grid."""
    args = (waves, head[0], last[0], head[1], last[1]) + (() if offsets is None else (offsets,))
    return _kernel(offsets is not None)(*args)


@functools.lru_cache(maxsize=2)
def _kernel(windowed: bool) -> Callable[..., Array]:
    """The kernel (full grid or windowed) as a function of (waves, trans_head, trans_last,
    kernels, mask[, offsets]), with the derivative of the XLA path with respect to its first five
    arguments (the offsets are integer data)."""
    from ptyro_simul.multislice import _crop_windows, _fresnel_far_field

    target = _WINDOWED if windowed else _TARGET

    def reference(w: Array, th: Array, tl: Array, k: Array, m: Array, *offsets: Array) -> Array:
        crop = _crop_windows(offsets[0], tl.shape, w.shape[-2:]) if offsets else None
        return _fresnel_far_field(w, (th, k), (tl, m), crop)

    @jax.custom_jvp
    def f(*args: Array) -> Array:
        out = jax.ShapeDtypeStruct(args[0].shape, jnp.float32)
        return jax.ffi.ffi_call(target, out, vmap_method="sequential")(*args)

    @f.defjvp
    def f_jvp(primals: tuple, tangents: tuple) -> tuple[Array, Array]:
        rest = primals[5:]
        _, tangent = jax.jvp(lambda *xs: reference(*xs, *rest), primals[:5], tangents[:5])
        return f(*primals), tangent

    return f

"""Pieces shared by the direct methods: the scan lattice, the patterns in FFT order, the
probe's Fourier transform at shifted frequencies, the Fourier transform of the data over the
scan, and the placement of a phase image on the lattice into a :class:`~ptyro_core.ReconState`.

Geometry (``../shared/DESIGN.md``): the detector frequency k (Å⁻¹) and the object frame share
their axes (as in the forward model); the scan is any affine raster, found from the positions:
position (i, j) = p₀ + i·a₁ + j·a₂ (a rotated or transposed raster is just other a₁, a₂). The
scan's Fourier frequencies (cycles per step, ``fftfreq``) map to object-frame frequencies
Q (Å⁻¹) by Q·a₁ = fᵢ, Q·a₂ = fⱼ.

Physics (thin specimen, probe P centred at the scan position, unitary FFT, numpy's sign): the
Fourier transform over the scan of the normalised intensities is

    G(k, Q) = Σ_R I(k, R) e^{−2πi Q·R} = Σ_q P̃(k − q − Q) P̃*(k − q) Õ(q + Q) Õ*(q),

and for a weak phase object O = 1 + iφ, G(k, Q) = i Φ(Q) γ(k, Q) with
γ(k, Q) = P̃*(k) P̃(k − Q) − P̃(k) P̃*(k + Q) (Φ the scan FFT of φ on the lattice).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ptyro_core import Dataset4D, PtyroTypeError, PtyroValueError, ReconState, replace
from ptyro_core.sources import XLA_ALIGN

__all__ = [
    "Lattice",
    "scan_lattice",
    "check_inputs",
    "normalised_patterns",
    "scan_array",
    "pattern_pixels",
    "project_patterns",
    "map_rows",
    "probe_fourier",
    "probe_geometry",
    "shift_fourier",
    "scan_fft",
    "phase_to_object",
    "finish",
]


class Lattice:
    """An affine raster: ``shape`` (Rx, Ry), ``origin`` p₀ (Å), ``vectors`` A = [a₁ a₂] (2×2,
    columns in Å); ``frequencies()`` are the scan FFT's frequencies Q (Rx, Ry, 2) in Å⁻¹."""

    def __init__(self, shape: tuple[int, int], origin: np.ndarray, vectors: np.ndarray) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.origin = np.asarray(origin, np.float64)
        self.vectors = np.asarray(vectors, np.float64)

    @property
    def step(self) -> tuple[float, float]:
        return float(np.linalg.norm(self.vectors[:, 0])), float(np.linalg.norm(self.vectors[:, 1]))

    def frequencies(self) -> np.ndarray:
        fi = np.fft.fftfreq(self.shape[0])
        fj = np.fft.fftfreq(self.shape[1])
        f = np.stack(np.meshgrid(fi, fj, indexing="ij"), -1)  # cycles per step
        return f @ np.linalg.inv(self.vectors)  # Q with A^T Q = f  <=>  Q^T = f^T A^{-1}

    def to_angstrom(self, shifts: Any) -> np.ndarray:
        """Shifts (…, 2) in lattice steps (i, j) → Å (object frame)."""
        return np.asarray(shifts, np.float64) @ self.vectors.T


def scan_lattice(positions: Any, scan_shape: tuple[int, int], *, tol: float = 1e-3, who: str = "direct") -> Lattice:
    """The affine raster of ``positions`` (Rx·Ry, 2) Å, row-major over ``scan_shape``; a scan
    that is not one (to ``tol`` of a step) is refused, naming the first position off it."""
    rx, ry = (int(s) for s in scan_shape)
    if rx < 2 or ry < 2:
        raise PtyroValueError(f"{who}: expected a 2D raster scan of at least 2 x 2 positions, got scan shape {(rx, ry)}")
    pos = np.asarray(positions, np.float64).reshape(rx, ry, 2)
    a1 = (pos[-1, 0] - pos[0, 0]) / (rx - 1)
    a2 = (pos[0, -1] - pos[0, 0]) / (ry - 1)
    A = np.stack([a1, a2], axis=1)
    if abs(np.linalg.det(A)) < 1e-12:
        raise PtyroValueError(f"{who}: the scan's step vectors {a1.tolist()} and {a2.tolist()} Å are parallel; expected a 2D raster")
    ii, jj = np.meshgrid(np.arange(rx), np.arange(ry), indexing="ij")
    model = pos[0, 0] + ii[..., None] * a1 + jj[..., None] * a2
    err = np.linalg.norm(pos - model, axis=-1)
    worst = np.unravel_index(int(np.argmax(err)), err.shape)
    if err[worst] > tol * min(np.linalg.norm(a1), np.linalg.norm(a2)):
        raise PtyroValueError(
            f"{who}: position {tuple(int(v) for v in worst)} is {err[worst]:.3g} Å off the raster p0 + i*a1 + j*a2; expected a regular (affine) raster scan"
        )
    return Lattice((rx, ry), pos[0, 0], A)


def check_inputs(dataset: Any, state: Any, who: str) -> None:
    if not isinstance(dataset, Dataset4D):
        raise PtyroTypeError(f"{who}: expected a Dataset4D, got {type(dataset).__name__}")
    if state is not None and not isinstance(state, ReconState):
        raise PtyroTypeError(f"{who}: expected a ReconState (e.g. from ptyro_invert.initial_state), got {type(state).__name__}")
    if state is not None and tuple(state.probe.shape[-2:]) != tuple(dataset.grid.gpts):
        raise PtyroValueError(f"{who}: the state's probe window {tuple(state.probe.shape[-2:])} differs from the dataset's patterns {tuple(dataset.grid.gpts)}")


def scan_array(dataset: Dataset4D, mesh: Any = None) -> jax.Array:
    """The patterns (Rx, Ry, Qx, Qy) float32, with a ``mesh`` (one axis, e.g.
    :func:`ptyro_core.pipeline.device_mesh`) split over its devices along the scan's first axis
    (the jitted computations that follow run sharded; XLA moves data where an FFT over the
    scan needs it)."""
    arr = np.asarray(dataset.array, np.float32)
    if mesh is None:
        return jnp.asarray(arr)
    ndev = int(mesh.devices.size)
    if arr.shape[0] % ndev:
        raise PtyroValueError(
            f"direct: the scan's first axis ({arr.shape[0]} positions) does not split over the mesh's {ndev} devices; expected a multiple of {ndev}"
        )
    return jax.device_put(arr, NamedSharding(mesh, P(mesh.axis_names[0])))


#: pixels converted to float32 at a time where the patterns are not float32 (16 MB of float32)
_BLOCK_PIXELS = 1 << 22


def project_patterns(dataset: Dataset4D, weights: Any, mesh: Any = None) -> Any:
    """Σ_k I(R, k)·w_m(k): each pattern (flattened in its stored, centred order) times the
    columns of ``weights`` (Qx·Qy, m), (Rx, Ry, m) float32, in one pass over the patterns and
    with no copy of the 4D array, float or otherwise. C-ordered NumPy patterns are read in place
    by a jitted matmul (:func:`_project_in_place`; a dtype other than float32 a block of
    patterns at a time, converted per block), a NumPy array back; other host patterns (a
    strided view, a lazy dataset's source) by BLAS a block of scan rows at a time; patterns on
    a device, or with a ``mesh``, by one jitted matmul, a JAX array back (integer counts there
    are converted inside it, which holds a float32 copy; with a mesh split over its devices
    along the scan, as :func:`scan_array`)."""
    w = np.asarray(weights, np.float32)
    arr = dataset.array
    if mesh is not None:
        arr = scan_array(dataset, mesh)
    if isinstance(arr, jax.Array):
        return _project(arr, jnp.asarray(w))
    rx, ry = arr.shape[:2]
    npix, m = w.shape
    if isinstance(arr, np.ndarray) and arr.flags.c_contiguous and arr.dtype.kind in "fiu" and npix >= 64:
        flat = arr.reshape(-1, npix)
        if arr.dtype == np.float32:
            return _project_in_place(flat, w).reshape(rx, ry, m)
        # other dtypes: XLA converts what it reads to float32 and holds that copy, so a block
        # of patterns (~4 M pixels) at a time, each read in place
        step = max(2, _BLOCK_PIXELS // npix)
        return np.concatenate([_project_in_place(flat[i : i + step], w) for i in range(0, len(flat), step)]).reshape(rx, ry, m)
    # a block of scan rows at a time: views of a NumPy array, or reads of a dataset on disk
    out = np.empty((rx, ry, m), np.float32)
    block = max(1, _BLOCK_PIXELS // max(1, ry * npix))
    for i in range(0, rx, block):
        rows = np.asarray(arr[i : i + block], np.float32)
        out[i : i + block] = (rows.reshape(-1, npix) @ w).reshape(rows.shape[0], ry, m)
    return out


@jax.jit
def _project(arr: jax.Array, w: jax.Array) -> jax.Array:
    """(…, Qx, Qy) patterns, any real dtype, times ``w`` (Qx·Qy, m): float32 (…, m)."""
    return arr.reshape(arr.shape[:-2] + (-1,)).astype(jnp.float32) @ w


def _project_in_place(flat: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``flat`` (N, npix) C-ordered on the host times ``w`` (npix, m) by XLA without copying
    ``flat``: XLA's CPU client reads a NumPy buffer in place only when it starts on an
    :data:`XLA_ALIGN` boundary. So the pass runs over the rows of the aligned
    interior, rows (N − 1, npix) starting ``off`` (< 64 bytes) elements in: each such row is
    the end of pattern r (w's rows off…npix−1) and the start of pattern r + 1 (w's rows
    0…off−1), multiplied by both parts of w at once (2m columns); the two pieces the interior
    leaves out (pattern 0's first ``off`` pixels, pattern N−1's last npix − off) are added on
    the host. (Aligned or not, the sums are the same, to float32 round-off.)"""
    n, npix = flat.shape
    off = (-flat.ctypes.data) % XLA_ALIGN // flat.itemsize
    if off == 0 or n < 2 or (-flat.ctypes.data) % flat.itemsize:
        return np.asarray(_project(flat.reshape(n, 1, npix), jnp.asarray(w)))
    m = w.shape[1]
    rows = flat.reshape(-1)[off : off + (n - 1) * npix].reshape(n - 1, npix)
    wab = np.zeros((npix, 2 * m), np.float32)
    wab[: npix - off, :m] = w[off:]
    wab[npix - off :, m:] = w[:off]
    both = np.asarray(_project(rows.reshape(n - 1, 1, npix), jnp.asarray(wab)))
    out = np.zeros((n, m), np.float32)
    out[:-1] += both[:, :m]
    out[1:] += both[:, m:]
    out[0] += flat[0, :off].astype(np.float32) @ w[:off]
    out[-1] += flat[-1, off:].astype(np.float32) @ w[off:]
    return out


def map_rows(fn: Any, mesh: Any, rows: tuple, shared: tuple) -> jax.Array:
    """``fn(*rows, *shared)`` with the leading axis of every array in ``rows`` (the spatial
    frequencies) split over the ``mesh``'s devices (``shard_map``: each device filters its own
    share, nothing is gathered but the result); without a mesh, a plain call."""
    if mesh is None or int(mesh.devices.size) == 1:
        return fn(*rows, *shared)
    ax = mesh.axis_names[0]
    n = int(rows[0].shape[0])
    ndev = int(mesh.devices.size)
    pad = (-n) % ndev
    padded = tuple(jnp.concatenate([r, jnp.zeros((pad,) + r.shape[1:], r.dtype)]) if pad else r for r in rows)
    out = jax.shard_map(fn, mesh=mesh, in_specs=(P(ax),) * len(rows) + (P(),) * len(shared), out_specs=P(ax))(*padded, *shared)
    return out[:n]


def normalised_patterns(dataset: Dataset4D, mesh: Any = None) -> tuple[jax.Array, float]:
    """Patterns (Rx, Ry, Qx, Qy) in FFT order (zero frequency at [0, 0]) divided by the mean
    total per pattern (the dose, returned too): a pattern of an unscattering specimen sums to 1.
    With a ``mesh``, split over its devices along the scan (:func:`scan_array`)."""
    arr = scan_array(dataset, mesh)
    dose = float(jnp.mean(jnp.sum(arr, axis=(-2, -1))))
    if not dose > 0:
        raise PtyroValueError("direct: the patterns sum to zero; expected diffraction intensities")
    return jnp.fft.ifftshift(arr, axes=(-2, -1)) / dose, dose


def pattern_pixels(dataset: Dataset4D, pixels: Any, mesh: Any = None) -> tuple[jax.Array, float]:
    """The patterns' ``pixels`` (flat indices in FFT order) (Rx, Ry, n), divided by the mean
    total per pattern (returned too), as :func:`normalised_patterns` would give them, without
    reordering the whole 4D array (only the n pixels are gathered; patterns on the host are
    gathered there and only the n pixels are copied to the device)."""
    nx, ny = dataset.grid.gpts
    ix, iy = np.divmod(np.asarray(pixels, np.int64), ny)
    centred = ((ix + nx // 2) % nx) * ny + (iy + ny // 2) % ny
    dose = float(np.mean(np.asarray(project_patterns(dataset, np.ones((nx * ny, 1)), mesh))))
    if not dose > 0:
        raise PtyroValueError("direct: the patterns sum to zero; expected diffraction intensities")
    host = dataset.array
    if mesh is None and isinstance(host, np.ndarray):
        picked = jnp.asarray(np.asarray(host.reshape(host.shape[:2] + (nx * ny,))[..., centred], np.float32))
    else:
        arr = scan_array(dataset, mesh)
        picked = arr.reshape(arr.shape[:2] + (nx * ny,))[..., jnp.asarray(centred)]
    return picked / dose, dose


def probe_fourier(state: ReconState) -> jax.Array:
    """P̃(k) (Qx, Qy) in FFT order of the state's first probe mode moved to the origin,
    normalised to Σ|P̃|² = 1."""
    p = jnp.fft.ifftshift(jnp.asarray(state.probe[0], jnp.complex64))
    pk = jnp.fft.fft2(p, norm="ortho")
    return pk / jnp.sqrt(jnp.sum(jnp.abs(pk) ** 2))


def _centred_probe(state: ReconState) -> jax.Array:
    p = jnp.fft.ifftshift(jnp.asarray(state.probe[0], jnp.complex64))
    return p / jnp.sqrt(jnp.sum(jnp.abs(p) ** 2))


ProbeGeometry = tuple[jax.Array, jax.Array, jax.Array]
"""What :func:`probe_geometry` returns and :func:`shift_fourier` takes (unpacked)."""


def probe_geometry(state: ReconState) -> ProbeGeometry:
    """(probe moved to the origin (px, py), normalised; its window's coordinates x (px, 1) and
    y (1, py) in Å about the probe centre): the arguments of :func:`shift_fourier`."""
    p = _centred_probe(state)
    nx, ny = p.shape
    dx, dy = state.sampling
    rx = jnp.asarray(np.fft.fftfreq(nx) * nx * dx, jnp.float32)[:, None]
    ry = jnp.asarray(np.fft.fftfreq(ny) * ny * dy, jnp.float32)[None, :]
    return p, rx, ry


def shift_fourier(p: jax.Array, rx: jax.Array, ry: jax.Array, q: jax.Array) -> jax.Array:
    """P̃(k − Q) (Qx, Qy) for Q = ``q`` (2,) Å⁻¹, exact for any Q (not only detector pixels):
    the FFT of P(r)·e^{2πi Q·r} (``p, rx, ry`` from :func:`probe_geometry`)."""
    ramp = jnp.exp(2j * jnp.pi * (q[0] * rx + q[1] * ry)).astype(jnp.complex64)
    return jnp.fft.fft2(p * ramp, norm="ortho")


def scan_fft(patterns: jax.Array, pixels: Any = None) -> jax.Array:
    """G (N, Rx, Ry): the FFT over the scan of each detector pixel's image (all pixels, or the
    flat indices ``pixels`` into (Qx, Qy) in FFT order)."""
    rx, ry = patterns.shape[:2]
    flat = patterns.reshape(rx, ry, -1)
    if pixels is not None:
        flat = flat[..., jnp.asarray(pixels)]
    return jnp.fft.fft2(jnp.moveaxis(flat, -1, 0), axes=(-2, -1))


def _fourier_upsample(img: jax.Array, factor: int) -> jax.Array:
    """Band-limited (periodic) upsampling of a real image by an integer factor."""
    if factor == 1:
        return img
    nx, ny = img.shape
    f = jnp.fft.fftshift(jnp.fft.fft2(img))
    px, py = (factor - 1) * nx, (factor - 1) * ny
    f = jnp.pad(f, ((px // 2, px - px // 2), (py // 2, py - py // 2)))
    return jnp.real(jnp.fft.ifft2(jnp.fft.ifftshift(f))) * factor * factor


def phase_to_object(phase: jax.Array, lattice: Lattice, state: ReconState) -> jax.Array:
    """The phase image on the scan lattice (Rx, Ry) as an object transmission exp(iφ) on the
    state's object grid (1, ox, oy): Fourier-upsampled to finer than the object pixel, sampled
    bilinearly at each object pixel inside the scanned area; outside it φ = 0. The lattice
    origin is the state's first position (the object frame). Differentiable in ``phase``."""
    lat = scan_lattice(state.positions, lattice.shape, who="direct")
    d = np.asarray(state.sampling, np.float64)
    factor = max(1, int(math.ceil(max(lat.step) / min(d) - 1e-6)))
    ox, oy = state.object.shape[-2:]
    c = np.stack(np.meshgrid(np.arange(ox) * d[0] - lat.origin[0], np.arange(oy) * d[1] - lat.origin[1], indexing="ij"), -1)
    c = c @ np.linalg.inv(lat.vectors).T  # lattice coordinates (i, j)
    inside = (c[..., 0] >= -0.5) & (c[..., 0] <= lat.shape[0] - 0.5) & (c[..., 1] >= -0.5) & (c[..., 1] <= lat.shape[1] - 0.5)
    coords = np.stack([np.mod(c[..., 0], lat.shape[0]) * factor, np.mod(c[..., 1], lat.shape[1]) * factor]).astype(np.float32)
    return _place(jnp.asarray(phase), jnp.asarray(coords), jnp.asarray(inside), factor)


@functools.partial(jax.jit, static_argnums=3)
def _place(phase: jax.Array, coords: jax.Array, inside: jax.Array, factor: int) -> jax.Array:
    up = _fourier_upsample(phase - jnp.mean(phase), factor)
    vals = jax.scipy.ndimage.map_coordinates(up, [coords[0], coords[1]], order=1, mode="wrap")
    return jnp.exp(1j * jnp.where(inside, vals, 0.0)).astype(jnp.complex64)[None]


def finish(state: ReconState, phase: jax.Array, lattice: Lattice, amplitude: Any = None) -> ReconState:
    """``state`` with the direct method's object (one slice) in place of its own."""
    obj = phase_to_object(phase, lattice, state)
    if amplitude is not None:
        obj = obj * amplitude
    return replace(state, object=obj, slice_thickness=state.slice_thickness[:1])

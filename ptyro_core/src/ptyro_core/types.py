"""The typed PyTrees that flow between components.

Every class is a frozen attrs class registered as a JAX PyTree: array fields are leaves,
configuration (grids, energies, names) is static metadata. User construction (``__init__``) is
checked with jaxtyping + beartype (shape, dtype) and by value (finiteness, physical range) where
the values are concrete; a failure is a :class:`PtyroValueError` / :class:`PtyroTypeError`
naming the class, the field, the value and what was expected. Inside ``jit``/``vmap`` the PyTree
machinery rebuilds objects without ``__init__``, so the checks never see tracers.

Conventions (see DESIGN.md): lengths in Å, energies in eV, array axis 0 is x and axis 1 is y,
diffraction patterns centred, complex64 / float32 by default.
"""

import math
import re
from collections.abc import Callable
from typing import Any

import attrs
import jax
import jax.numpy as jnp
import numpy as np
from beartype import beartype
from beartype.door import is_bearable
from jaxtyping import Array, Complex, Float, Int, Real, jaxtyped

from ptyro_core._pytree import describe, is_tracer, pytree, replace, static_field
from ptyro_core.errors import PtyroTypeError, PtyroValueError

__all__ = [
    "Grid",
    "Atoms",
    "PotentialSlices",
    "ProbeModes",
    "ScanPositions",
    "Dataset4D",
    "ReconState",
    "replace",
]


# --------------------------------------------------------------------------- helpers


def _to_jax(x: Any) -> Any:
    # device_put copies a NumPy array once; jnp.asarray stages it through an extra buffer
    return jax.device_put(x) if isinstance(x, np.ndarray) and x.dtype.kind in "fciub" else jnp.asarray(x)


def _as_real(cls: str, field: str, x: Any) -> Any:
    if is_tracer(x):
        return x
    if isinstance(x, (jax.Array, np.ndarray)) and jnp.iscomplexobj(x):
        raise PtyroTypeError(f"{cls}.{field}: expected a real array, got {describe(x)}")
    try:
        a = _to_jax(x)
    except (TypeError, ValueError) as e:
        raise PtyroTypeError(f"{cls}.{field}: expected a real array, got {describe(x)} ({e})") from None
    if jnp.issubdtype(a.dtype, jnp.floating):
        return a
    return a.astype(jnp.float32)


def _as_complex(cls: str, field: str, x: Any) -> Any:
    if is_tracer(x):
        return x
    try:
        a = _to_jax(x)
    except (TypeError, ValueError) as e:
        raise PtyroTypeError(f"{cls}.{field}: expected a complex array, got {describe(x)} ({e})") from None
    if jnp.issubdtype(a.dtype, jnp.complexfloating):
        return a
    if a.dtype == jnp.float64:
        return a.astype(jnp.complex128)
    return a.astype(jnp.complex64)


def _as_int(cls: str, field: str, x: Any) -> Any:
    if is_tracer(x):
        return x
    a = _to_jax(x)
    if jnp.issubdtype(a.dtype, jnp.integer):
        return a.astype(jnp.int32)
    if jnp.issubdtype(a.dtype, jnp.floating) and a.size and bool(jnp.all(a == jnp.round(a))):
        return a.astype(jnp.int32)
    if a.size == 0:
        return a.astype(jnp.int32)
    raise PtyroTypeError(f"{cls}.{field}: expected integers, got {describe(x)}")


def _hint_str(hint: Any) -> str:
    text = getattr(hint, "__name__", None) or str(hint)
    text = text.replace("jaxlib._jax.Array", "Array").replace("jax.Array", "Array").replace("jaxtyping.", "")
    # a union of one dtype class over several array types, as one: Real[Array | ndarray, 'dims']
    m = re.fullmatch(r"(\w+)\[(\w+), ('[^']*')\] \| \1\[(\w+), \3\]", text)
    return f"{m[1]}[{m[2]} | {m[4]}, {m[3]}]" if m else text


def _run_checker(cls: str, checker: Callable[..., None], **fields: Any) -> None:
    """Run a jaxtyped+beartype checker and turn its failure into one clear message naming the
    field at fault (or the fields whose shared dimensions disagree)."""
    try:
        checker(**fields)
        return
    except Exception as e:  # noqa: BLE001 - beartype / jaxtyping raise several types
        del e
    shapes = ", ".join(f"{n}={describe(v)}" for n, v in fields.items())
    for name, value in fields.items():
        hint = checker.__annotations__[name]
        if not is_bearable(value, hint):
            raise PtyroTypeError(f"{cls}.{name}: expected {_hint_str(hint)}, got {describe(value)}") from None
    expected = ", ".join(f"{n}: {_hint_str(checker.__annotations__[n])}" for n in fields)
    raise PtyroTypeError(f"{cls}: shared dimensions disagree between fields: got {shapes}; expected {expected}") from None


def _blocks(x: Any, max_bytes: int = 4 << 20) -> Any:
    """``x`` as host (NumPy) row blocks of at most ``max_bytes``, so that a check of a large array
    needs no full-size temporaries; zero-copy for NumPy arrays and JAX arrays on the CPU."""
    if isinstance(x, jax.Array) and any(d.platform != "cpu" for d in x.devices()):
        yield np.asarray(x)  # an accelerator array: one host copy
        return
    a = np.asarray(x)
    if a.ndim == 0 or a.nbytes <= max_bytes:
        yield a
        return
    flat = a.reshape((a.shape[0], -1))
    rows = max(1, max_bytes // max(flat[0].nbytes, 1))
    for i in range(0, flat.shape[0], rows):
        yield flat[i : i + rows]


def _check_finite(cls: str, field: str, x: Any) -> None:
    if is_tracer(x):
        return
    bad = 0
    for blk in _blocks(x):
        if not np.isfinite(blk).all():
            bad += int(np.sum(~np.isfinite(blk)))
    if bad:
        raise PtyroValueError(f"{cls}.{field}: expected finite values, found {bad} NaN/inf entries in {describe(x)}")


def _check_range(cls: str, field: str, x: Any, lo: float | None = None, hi: float | None = None, *, strict_lo: bool = False) -> None:
    if is_tracer(x):
        return
    for a in _blocks(x):
        if a.size == 0:
            continue
        if lo is not None:
            bad = a <= lo if strict_lo else a < lo
            if bad.any():
                rel = ">" if strict_lo else ">="
                raise PtyroValueError(f"{cls}.{field}: expected values {rel} {lo}, got {a[bad].ravel()[0].item()!r}")
        if hi is not None and (a > hi).any():
            raise PtyroValueError(f"{cls}.{field}: expected values <= {hi}, got {a[a > hi].ravel()[0].item()!r}")


def _positive_number(cls: str, field: str, x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise PtyroTypeError(f"{cls}.{field}: expected a positive number, got {x!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise PtyroValueError(f"{cls}.{field}: expected a positive finite number, got {x!r}")
    return v


def _pair(cls: str, field: str, x: Any, kind: type) -> tuple:
    if isinstance(x, (int, float, np.integer, np.floating)):
        x = (x, x)
    try:
        t = tuple(x)
    except TypeError:
        raise PtyroTypeError(f"{cls}.{field}: expected a pair (x, y), got {x!r}") from None
    if len(t) != 2:
        raise PtyroValueError(f"{cls}.{field}: expected a pair (x, y), got {len(t)} values {x!r}")
    if kind is int:
        out = []
        for v in t:
            if isinstance(v, bool) or not float(v).is_integer():
                raise PtyroTypeError(f"{cls}.{field}: expected integers, got {x!r}")
            out.append(int(v))
        return tuple(out)
    return tuple(_positive_number(cls, field, v) for v in t)


def _set(obj: Any, **values: Any) -> None:
    for k, v in values.items():
        object.__setattr__(obj, k, v)


# --------------------------------------------------------------------------- Grid


@pytree
@attrs.frozen
class Grid:
    """A real-space sampling grid: ``gpts`` = (nx, ny) points, ``sampling`` = (dx, dy) in Å.

    Entirely static (hashable): a new grid retraces, as a new shape would. Reciprocal space
    follows from the unitary FFT: frequency spacing 1 / (n d) in Å⁻¹.
    """

    gpts: tuple[int, int] = static_field()
    sampling: tuple[float, float] = static_field()

    def __attrs_post_init__(self) -> None:
        gpts = _pair("Grid", "gpts", self.gpts, int)
        if min(gpts) < 1:
            raise PtyroValueError(f"Grid.gpts: expected positive integers, got {self.gpts!r}")
        _set(self, gpts=gpts, sampling=_pair("Grid", "sampling", self.sampling, float))

    @classmethod
    def from_extent(cls, extent: Any, *, gpts: Any = None, sampling: Any = None) -> "Grid":
        """A grid covering ``extent`` Å given either ``gpts`` or a target ``sampling`` (Å)."""
        ext = _pair("Grid", "extent", extent, float)
        if (gpts is None) == (sampling is None):
            raise PtyroValueError("Grid.from_extent: give exactly one of gpts or sampling")
        if gpts is None:
            s = _pair("Grid", "sampling", sampling, float)
            gpts = tuple(max(1, int(math.ceil(e / d - 1e-9))) for e, d in zip(ext, s))
        g = _pair("Grid", "gpts", gpts, int)
        return cls(g, tuple(e / n for e, n in zip(ext, g)))

    @property
    def extent(self) -> tuple[float, float]:
        """(x, y) size of the grid in Å."""
        return (self.gpts[0] * self.sampling[0], self.gpts[1] * self.sampling[1])

    @property
    def reciprocal_sampling(self) -> tuple[float, float]:
        """Frequency spacing (Å⁻¹) of the unshifted FFT of an array on this grid."""
        return (1.0 / self.extent[0], 1.0 / self.extent[1])

    def frequencies(self, dtype: Any = jnp.float32) -> tuple[Array, Array]:
        """FFT-ordered spatial frequencies (kx[:, None], ky[None, :]) in Å⁻¹ (unshifted)."""
        kx = jnp.fft.fftfreq(self.gpts[0], self.sampling[0]).astype(dtype)
        ky = jnp.fft.fftfreq(self.gpts[1], self.sampling[1]).astype(dtype)
        return kx[:, None], ky[None, :]

    def coordinates(self, dtype: Any = jnp.float32) -> tuple[Array, Array]:
        """Real-space coordinates (x[:, None], y[None, :]) in Å of the grid points."""
        x = jnp.arange(self.gpts[0], dtype=dtype) * self.sampling[0]
        y = jnp.arange(self.gpts[1], dtype=dtype) * self.sampling[1]
        return x[:, None], y[None, :]


# --------------------------------------------------------------------------- Atoms


@jaxtyped(typechecker=beartype)
def _check_atoms(positions: Float[Array, "n 3"], numbers: Int[Array, " n"], sigmas: Float[Array, " n"]) -> None:
    pass


@pytree
@attrs.frozen(eq=False)
class Atoms:
    """Atoms in an orthorhombic cell.

    positions: (n, 3) Å (x, y, z; z along the beam); numbers: (n,) atomic numbers Z in 1..103;
    sigmas: (n,) rms thermal displacement per atom and per direction in Å (frozen phonons);
    cell: (a, b, c) Å, static.
    """

    positions: Any
    numbers: Any
    cell: tuple[float, float, float] = static_field()
    sigmas: Any = None

    def __attrs_post_init__(self) -> None:
        pos = _as_real("Atoms", "positions", self.positions)
        num = _as_int("Atoms", "numbers", self.numbers)
        sig = jnp.zeros(num.shape, pos.dtype) if self.sigmas is None else _as_real("Atoms", "sigmas", self.sigmas)
        _run_checker("Atoms", _check_atoms, positions=pos, numbers=num, sigmas=sig)
        try:
            cell = tuple(float(c) for c in self.cell)
        except TypeError:
            raise PtyroTypeError(f"Atoms.cell: expected three lengths (a, b, c) in Å, got {self.cell!r}") from None
        if len(cell) != 3:
            raise PtyroValueError(f"Atoms.cell: expected three lengths (a, b, c) in Å, got {self.cell!r}")
        for c in cell:
            _positive_number("Atoms", "cell", c)
        _check_finite("Atoms", "positions", pos)
        _check_range("Atoms", "numbers", num, 1, 103)
        _check_finite("Atoms", "sigmas", sig)
        _check_range("Atoms", "sigmas", sig, 0.0)
        _set(self, positions=pos, numbers=num, sigmas=sig, cell=cell)

    def __len__(self) -> int:
        return int(self.numbers.shape[0])


# --------------------------------------------------------------------------- PotentialSlices


@jaxtyped(typechecker=beartype)
def _check_slices(array: Float[Array, "s nx ny"], slice_thickness: Float[Array, " s"]) -> None:
    pass


@pytree
@attrs.frozen(eq=False)
class PotentialSlices:
    """Projected potential per slice in V·Å: array (s, nx, ny); slice_thickness (s,) in Å.

    ``slice_thickness`` is a leaf, so gradients with respect to it flow.
    """

    array: Any
    slice_thickness: Any
    grid: Grid = static_field()

    def __attrs_post_init__(self) -> None:
        arr = _as_real("PotentialSlices", "array", self.array)
        th = self.slice_thickness
        if not is_tracer(th) and np.ndim(th) == 0 and hasattr(arr, "shape"):
            th = jnp.full((arr.shape[0],), float(th), dtype=arr.dtype)
        th = _as_real("PotentialSlices", "slice_thickness", th)
        _run_checker("PotentialSlices", _check_slices, array=arr, slice_thickness=th)
        _check_grid_shape("PotentialSlices", "array", arr.shape[-2:], self.grid)
        _check_finite("PotentialSlices", "array", arr)
        _check_finite("PotentialSlices", "slice_thickness", th)
        _check_range("PotentialSlices", "slice_thickness", th, 0.0, strict_lo=True)
        _set(self, array=arr, slice_thickness=th)

    @property
    def num_slices(self) -> int:
        return int(self.array.shape[-3])

    @property
    def thickness(self) -> Any:
        """Total thickness in Å."""
        return jnp.sum(self.slice_thickness, axis=-1)


def _check_grid_shape(cls: str, field: str, shape: tuple, grid: Any) -> None:
    if not isinstance(grid, Grid):
        raise PtyroTypeError(f"{cls}.grid: expected a Grid, got {describe(grid)}")
    if tuple(shape) != tuple(grid.gpts):
        raise PtyroValueError(f"{cls}.{field}: last two axes {tuple(shape)} do not match grid.gpts {grid.gpts}")


# --------------------------------------------------------------------------- ProbeModes


@jaxtyped(typechecker=beartype)
def _check_probe(array: Complex[Array, "m nx ny"]) -> None:
    pass


@pytree
@attrs.frozen(eq=False)
class ProbeModes:
    """One or more mutually incoherent probe modes, array (m, nx, ny) complex, on ``grid``.

    Normalisation convention: Σ_modes Σ_pixels |ψ|² = 1, the share of each mode being its
    occupancy. ``energy`` in eV is static metadata.
    """

    array: Any
    grid: Grid = static_field()
    energy: float = static_field()

    def __attrs_post_init__(self) -> None:
        arr = _as_complex("ProbeModes", "array", self.array)
        if hasattr(arr, "ndim") and arr.ndim == 2:
            arr = arr[None]
        _run_checker("ProbeModes", _check_probe, array=arr)
        _check_grid_shape("ProbeModes", "array", arr.shape[-2:], self.grid)
        _check_finite("ProbeModes", "array", arr)
        _set(self, array=arr, energy=_positive_number("ProbeModes", "energy", self.energy))

    @property
    def num_modes(self) -> int:
        return int(self.array.shape[-3])

    @property
    def occupancies(self) -> Array:
        """Share of the total intensity carried by each mode (sums to 1 when normalised)."""
        p = jnp.sum(jnp.abs(self.array) ** 2, axis=(-2, -1))
        return p / jnp.sum(p, axis=-1, keepdims=True)


# --------------------------------------------------------------------------- ScanPositions


@jaxtyped(typechecker=beartype)
def _check_positions(positions: Float[Array, "n 2"]) -> None:
    pass


@pytree
@attrs.frozen(eq=False)
class ScanPositions:
    """Probe positions (n, 2) as (x, y) in Å; ``shape`` (Rx, Ry) when they form a raster
    (row-major: position index = ix * Ry + iy), else None."""

    positions: Any
    shape: tuple[int, int] | None = static_field(default=None)

    def __attrs_post_init__(self) -> None:
        pos = _as_real("ScanPositions", "positions", self.positions)
        _run_checker("ScanPositions", _check_positions, positions=pos)
        _check_finite("ScanPositions", "positions", pos)
        shape = self.shape
        if shape is not None:
            shape = _pair("ScanPositions", "shape", shape, int)
            if shape[0] * shape[1] != pos.shape[0]:
                raise PtyroValueError(f"ScanPositions.shape: {shape} holds {shape[0] * shape[1]} positions, but positions has {pos.shape[0]}")
        _set(self, positions=pos, shape=shape)

    @classmethod
    def raster(cls, start: Any, end: Any, gpts: Any, *, endpoint: bool = False) -> "ScanPositions":
        """A raster from ``start`` to ``end`` (Å; end excluded unless ``endpoint``) with gpts (Rx, Ry)."""
        start = tuple(float(v) for v in start)
        end = tuple(float(v) for v in end)
        n = _pair("ScanPositions", "gpts", gpts, int)
        axes = [np.linspace(s, e, k, endpoint=endpoint, dtype=np.float64) for s, e, k in zip(start, end, n)]
        xx, yy = np.meshgrid(*axes, indexing="ij")
        return cls(np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float32), shape=n)

    def __len__(self) -> int:
        return int(self.positions.shape[0])


# --------------------------------------------------------------------------- Dataset4D


@jaxtyped(typechecker=beartype)
def _check_dataset(array: Real[Array, "rx ry qx qy"] | Real[np.ndarray, "rx ry qx qy"], positions: Float[Array, "n 2"]) -> None:
    pass


def _is_source(x: Any) -> bool:
    """A pattern source or another on-disk array-like (not an in-memory array, not a tracer)."""
    return not isinstance(x, (jax.Array, np.ndarray, list, tuple)) and hasattr(x, "shape") and (hasattr(x, "read") or hasattr(x, "__getitem__"))


def _as_data(x: Any) -> Any:
    """The patterns as given, without a copy: a NumPy array stays on the host (batches are
    gathered from it, so there is no second full copy on a device), a JAX array stays where it
    is, and integer counts keep their integer type until a batch needs floats. Only what has
    no such type is converted (lists, booleans: float32; float64 without x64: float32)."""
    if is_tracer(x):
        return x
    if isinstance(x, (jax.Array, np.ndarray)) and jnp.iscomplexobj(x):
        raise PtyroTypeError(f"Dataset4D.array: expected a real array, got {describe(x)}")
    if not isinstance(x, (jax.Array, np.ndarray)):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as e:
            raise PtyroTypeError(f"Dataset4D.array: expected a real array, got {describe(x)} ({e})") from None
        if x.dtype.kind not in "iuf":
            raise PtyroTypeError(f"Dataset4D.array: expected a real array, got {describe(x)}")
    kind = np.dtype(x.dtype).kind
    if kind in "iu" or (kind == "f" and (x.dtype != np.float64 or jax.config.read("jax_enable_x64"))):
        return x
    return x.astype(np.float32) if isinstance(x, np.ndarray) else x.astype(jnp.float32)


@pytree
@attrs.frozen(eq=False)
class Dataset4D:
    """A 4D-STEM dataset: array (Rx, Ry, Qx, Qy) of diffraction intensities, patterns centred
    (zero frequency at index n // 2), positions (Rx·Ry, 2) in Å (row-major over Rx, Ry).

    ``grid`` is the real-space grid the patterns are the unitary FFT of (so the pattern pixel is
    ``grid.reciprocal_sampling`` Å⁻¹); ``energy`` in eV.

    The array is held as given, never copied: a NumPy array stays on the host (the pipelines
    gather batches from it and move only those to the devices), integer counts stay integers
    (a batch is converted to floats on its device). ``array`` may also be a
    :class:`~ptyro_core.protocols.PatternSource` (:mod:`ptyro_core.sources`: a ``.npy`` or HDF5
    file read batch by batch), which owns its file handle; see :meth:`lazy`.
    """

    array: Any
    positions: Any
    grid: Grid = static_field()
    energy: float = static_field()

    def __attrs_post_init__(self) -> None:
        if _is_source(self.array):  # patterns on disk: Dataset4D(other.array, new positions, ...) keeps them there
            _init_lazy(self, self.array, self.positions, self.grid, self.energy)
            return
        arr = _as_data(self.array)
        pos = self.positions.positions if isinstance(self.positions, ScanPositions) else self.positions
        pos = _as_real("Dataset4D", "positions", pos)
        _run_checker("Dataset4D", _check_dataset, array=arr, positions=pos)
        if arr.shape[0] * arr.shape[1] != pos.shape[0]:
            raise PtyroValueError(
                f"Dataset4D.positions: expected Rx*Ry = {arr.shape[0] * arr.shape[1]} positions for array {describe(arr)}, got {pos.shape[0]}"
            )
        _check_grid_shape("Dataset4D", "array", arr.shape[-2:], self.grid)
        kind = np.dtype(arr.dtype).kind
        if kind == "f":
            _check_finite("Dataset4D", "array", arr)
        if kind != "u":
            _check_range("Dataset4D", "array", arr, 0.0)
        _check_finite("Dataset4D", "positions", pos)
        _set(self, array=arr, positions=pos, energy=_positive_number("Dataset4D", "energy", self.energy))

    @classmethod
    def lazy(cls, array: Any, positions: Any, *, grid: Grid, energy: float) -> "Dataset4D":
        """A dataset whose patterns stay on disk: ``array`` is a
        :class:`~ptyro_core.protocols.PatternSource` (``ptyro_core.sources.HDF5Source(path,
        name)``, ``MemmapSource(path)``: the source opens its file while it is read and closes
        it after) or a 4D array-like with basic indexing that the caller owns (an open
        ``h5py.Dataset``, a ``numpy.memmap``), read batch by batch by the pipelines
        (:func:`ptyro_core.pipeline.pattern_source`). Shapes and calibrations are checked; the
        pattern values are not (they are never all loaded). Not for ``jit``."""
        obj = object.__new__(cls)
        _init_lazy(obj, array, positions, grid, energy)
        return obj

    @property
    def is_lazy(self) -> bool:
        """True when the patterns are read from disk on demand (see :meth:`lazy`)."""
        from ptyro_core.sources import ArraySource

        if isinstance(self.array, ArraySource):
            return False
        return not isinstance(self.array, (jax.Array, np.ndarray)) or isinstance(self.array, np.memmap)

    @property
    def dtype(self) -> Any:
        """The stored dtype of the patterns (integer counts stay integers)."""
        return np.dtype(self.array.dtype)

    @property
    def scan_shape(self) -> tuple[int, int]:
        return (int(self.array.shape[0]), int(self.array.shape[1]))

    @property
    def patterns(self) -> Array:
        """The patterns flattened over the scan: (Rx·Ry, Qx, Qy)."""
        return self.array.reshape((-1,) + tuple(self.array.shape[-2:]))


def _init_lazy(obj: Any, array: Any, positions: Any, grid: Any, energy: Any) -> None:
    shape = tuple(int(s) for s in getattr(array, "shape", ()))
    if len(shape) != 4:
        raise PtyroTypeError(f"Dataset4D.array: expected a 4D array-like (Rx, Ry, Qx, Qy), got shape {shape}")
    pos = positions.positions if isinstance(positions, ScanPositions) else positions
    pos = _as_real("Dataset4D", "positions", pos)
    _run_checker("ScanPositions", _check_positions, positions=pos)
    if shape[0] * shape[1] != pos.shape[0]:
        raise PtyroValueError(f"Dataset4D.positions: expected Rx*Ry = {shape[0] * shape[1]} positions for shape {shape}, got {pos.shape[0]}")
    _check_grid_shape("Dataset4D", "array", shape[-2:], grid)
    _check_finite("Dataset4D", "positions", pos)
    _set(obj, array=array, positions=pos, grid=grid, energy=_positive_number("Dataset4D", "energy", energy))


# --------------------------------------------------------------------------- ReconState


@jaxtyped(typechecker=beartype)
def _check_recon(
    object: Complex[Array, "s ox oy"],
    probe: Complex[Array, "m px py"],
    positions: Float[Array, "n 2"],
    slice_thickness: Float[Array, " s"],
) -> None:
    pass


@pytree
@attrs.frozen(eq=False)
class ReconState:
    """A ptychographic reconstruction.

    object: (s, ox, oy) complex transmission per slice; probe: (m, px, py) complex modes;
    positions: (n, 2) Å, the probe centre in the object's frame (object pixel [0, 0] at
    (0, 0) Å); slice_thickness: (s,) Å; loss: (k,) loss per
    completed iteration; iteration: number of completed passes. ``sampling`` (dx, dy) Å and
    ``energy`` eV are static.
    """

    object: Any
    probe: Any
    positions: Any
    sampling: tuple[float, float] = static_field()
    energy: float = static_field()
    slice_thickness: Any = None
    loss: Any = None
    iteration: Any = 0

    position_convention = "probe centre in Å, object pixel [0, 0] at (0, 0) Å"

    def __attrs_post_init__(self) -> None:
        obj = _as_complex("ReconState", "object", self.object)
        if hasattr(obj, "ndim") and obj.ndim == 2:
            obj = obj[None]
        probe = _as_complex("ReconState", "probe", self.probe)
        if hasattr(probe, "ndim") and probe.ndim == 2:
            probe = probe[None]
        pos = self.positions.positions if isinstance(self.positions, ScanPositions) else self.positions
        pos = _as_real("ReconState", "positions", pos)
        # defaults made on the host and transferred (an eager jnp.ones / zeros / asarray compiles
        # a program, which the process keeps)
        th = self.slice_thickness
        if th is None:
            th = np.ones((obj.shape[0],), np.float32)
        elif not is_tracer(th) and np.ndim(th) == 0:
            th = np.full((obj.shape[0],), float(th), np.float32)
        th = _as_real("ReconState", "slice_thickness", th)
        loss = _to_jax(np.zeros((0,), np.float32)) if self.loss is None else _as_real("ReconState", "loss", self.loss)
        it = self.iteration
        if not is_tracer(it) and not (isinstance(it, jax.Array) and it.dtype == jnp.int32):
            it = _to_jax(np.asarray(it, np.int32))
        _run_checker("ReconState", _check_recon, object=obj, probe=probe, positions=pos, slice_thickness=th)
        for name, v in (("object", obj), ("probe", probe), ("positions", pos), ("slice_thickness", th)):
            _check_finite("ReconState", name, v)
        _check_range("ReconState", "slice_thickness", th, 0.0, strict_lo=True)
        _set(
            self,
            object=obj,
            probe=probe,
            positions=pos,
            slice_thickness=th,
            loss=loss,
            iteration=it,
            sampling=_pair("ReconState", "sampling", self.sampling, float),
            energy=_positive_number("ReconState", "energy", self.energy),
        )

    @property
    def object_grid(self) -> Grid:
        return Grid(tuple(self.object.shape[-2:]), self.sampling)

    @property
    def probe_grid(self) -> Grid:
        return Grid(tuple(self.probe.shape[-2:]), self.sampling)

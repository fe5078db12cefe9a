"""The simulation pipeline: configuration → structure → potential → probe → 4D-STEM dataset.

Every component is looked up by its registry name (potential parametrization, probe,
simulator, propagator), outside ``jit``, so a third-party plugin works the moment it is
installed. Patterns are computed batch by batch through :func:`ptyro_core.pipeline.map_batches`
(sharded over every device) and, when an output path is given, written into the HDF5 file as
they arrive, so memory is bounded by the batch, not by the scan.
"""

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import jax
import jax.numpy as jnp
import numpy as np

from ptyro_core import Atoms, Dataset4D, Grid, PotentialSlices, ProbeModes, PtyroValueError, ScanPositions, get
from ptyro_core.pipeline import device_mesh, is_writer, map_batches
from ptyro_workflows.config import aberrations_for_api, simulation_config
from ptyro_workflows.io import DatasetWriter, check_output
from ptyro_workflows.progress import progress_bar
from ptyro_workflows.provenance import make_provenance

__all__ = ["SimulationResult", "build_specimen", "build_potential", "build_probe", "scan_positions", "virtual_masks", "simulate"]


@attrs.frozen(eq=False)
class SimulationResult:
    """What :func:`simulate` returns.

    dataset: the :class:`~ptyro_core.Dataset4D` (None when streamed to a file with
    ``keep=False``); images: virtual detector images (Rx, Ry) by detector name; potential: the
    (static, undisplaced) :class:`~ptyro_core.PotentialSlices`; probe: the
    :class:`~ptyro_core.ProbeModes`; config: the validated configuration; path: the file written
    (or None); provenance: the provenance record.
    """

    dataset: Dataset4D | None
    images: dict[str, np.ndarray]
    potential: PotentialSlices
    probe: ProbeModes
    config: dict[str, Any]
    path: Path | None
    provenance: dict[str, Any]

    @property
    def projected_potential(self) -> np.ndarray:
        """Σ over slices of the potential, (x, y) in V·Å."""
        return np.asarray(jnp.sum(self.potential.array, axis=0))

    @property
    def phase(self) -> np.ndarray:
        """The ground-truth phase σ·ΣV (rad) of a thin specimen, (x, y)."""
        from ptyro_simul.constants import energy2sigma

        return energy2sigma(self.probe.energy) * self.projected_potential


# --------------------------------------------------------------------------- specimen


def build_specimen(specimen: Mapping[str, Any]) -> Atoms:
    """Atoms from a ``[specimen]`` table: a built-in crystal name or a structure file, repeated."""
    try:
        from ptyro_simul import structures
    except ImportError:  # ptyro_simul without structures yet: built-in crystals only
        structures = None

    name = str(specimen["structure"])
    repeat = tuple(int(v) for v in specimen.get("repeat", (1, 1, 1)))
    zone = tuple(int(v) for v in specimen.get("zone_axis", (0, 0, 1)))
    looks_like_path = any(name.lower().endswith(ext) for ext in (".xyz", ".extxyz", ".cif", ".vasp", ".poscar")) or "/" in name or name.upper() in ("POSCAR", "CONTCAR")
    if looks_like_path:
        p = Path(name)
        if not p.exists():
            raise PtyroValueError(f"[specimen] structure: file {name!r} not found; expected a built-in crystal name or a structure file (.xyz, .extxyz, .cif, .vasp)")
        if structures is None:
            raise PtyroValueError(f"[specimen] structure: reading structure files needs ptyro_simul.structures; got {name!r}")
        atoms = structures.read_structure(p)
        if zone != (0, 0, 1):
            _unsupported_zone(zone)
        return _repeat(atoms, repeat) if repeat != (1, 1, 1) else atoms
    if structures is None:
        from ptyro_workflows._fallback import builtin_crystal

        return builtin_crystal(name, repeat, zone)
    return structures.build_crystal(name, repeat=repeat, zone_axis=zone)


def _unsupported_zone(zone: tuple) -> Any:
    raise PtyroValueError(f"[specimen] zone_axis {list(zone)}: orienting a structure file is not supported; expected [0, 0, 1] (orient the file itself)")


def _repeat(atoms: Atoms, repeat: tuple[int, int, int]) -> Atoms:
    """``atoms`` tiled ``repeat`` = (nx, ny, nz) times along the cell axes."""
    pos = np.asarray(atoms.positions, np.float64)
    cell = np.asarray(atoms.cell, np.float64)
    shifts = np.stack(np.meshgrid(*(np.arange(r) for r in repeat), indexing="ij"), -1).reshape(-1, 3) * cell
    n = len(shifts)
    return Atoms(
        (pos[None] + shifts[:, None]).reshape(-1, 3).astype(np.float32),
        np.tile(np.asarray(atoms.numbers), n),
        tuple(float(c * r) for c, r in zip(cell, repeat)),
        sigmas=np.tile(np.asarray(atoms.sigmas), n),
    )


def potential_grid(atoms: Atoms, potential: Mapping[str, Any]) -> Grid:
    """The grid covering the cell from ``gpts`` or ``sampling`` (default 0.1 Å)."""
    extent = (atoms.cell[0], atoms.cell[1])
    if potential.get("gpts") is not None:
        return Grid.from_extent(extent, gpts=potential["gpts"])
    return Grid.from_extent(extent, sampling=potential.get("sampling") or 0.1)


def build_potential(atoms: Atoms, grid: Grid, potential: Mapping[str, Any]) -> PotentialSlices:
    """The potential slices from the registered parametrization named in ``[potential]``."""
    fn = get("potential", potential["parametrization"])
    return fn(atoms, grid, slice_thickness=float(potential["slice_thickness"]), projection=str(potential["projection"]))


def build_probe(grid: Grid, probe: Mapping[str, Any]) -> ProbeModes:
    """The probe from the registered probe component named in ``[probe] name`` (azimuths in
    the table are degrees; the component receives radians)."""
    fn = get("probe", probe.get("name", "aberrated"))
    return fn(grid, float(probe["energy"]), semiangle_cutoff=float(probe["semiangle_cutoff"]), aberrations=aberrations_for_api(probe))


def scan_positions(scan: Mapping[str, Any], extent: tuple[float, float]) -> ScanPositions:
    """The raster of a ``[scan]`` table (start/end in Å, end excluded; default: the whole cell,
    16 x 16), checked to lie inside the cell."""
    start = scan.get("start") or [0.0, 0.0]
    end = scan.get("end") or list(extent)
    if scan.get("step") is not None and scan.get("gpts") is None:
        gpts = [max(1, int(math.ceil((e - s) / d - 1e-9))) for s, e, d in zip(start, end, scan["step"])]
    else:
        gpts = scan.get("gpts") or [16, 16]
    for i, axis in enumerate("xy"):
        if start[i] < 0 or end[i] > extent[i] + 1e-6:
            raise PtyroValueError(
                f"[scan] {axis} range [{start[i]}, {end[i]}] Å lies outside the cell [0, {extent[i]:.4g}] Å; expected 0 <= start < end <= cell size"
            )
    return ScanPositions.raster(start, end, gpts)


def virtual_masks(grid: Grid, energy: float, detectors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """(Qx, Qy) 0/1 masks of the annular detectors ({name: [inner, outer] mrad}) on the centred
    pattern grid. A detector beyond the grid's band limit raises."""
    from ptyro_simul.constants import energy2wavelength
    from ptyro_simul.propagator import antialias_cutoff

    lam = energy2wavelength(energy)
    kx = np.fft.fftshift(np.fft.fftfreq(grid.gpts[0], grid.sampling[0]))[:, None]
    ky = np.fft.fftshift(np.fft.fftfreq(grid.gpts[1], grid.sampling[1]))[None, :]
    alpha = np.sqrt(kx**2 + ky**2) * lam * 1e3  # mrad
    limit = antialias_cutoff(grid) * lam * 1e3
    out = {}
    for name, rng in detectors.items():
        if name == "pixelated":
            continue
        inner, outer = float(rng[0]), float(rng[1])
        if inner >= limit:
            raise PtyroValueError(
                f"[detectors] {name}: inner angle {inner} mrad is beyond the band limit of the grid ({limit:.1f} mrad); use a finer [potential] sampling or smaller angles"
            )
        out[name] = ((alpha >= inner) & (alpha < outer)).astype(np.float32)
    return out


def _displaced(atoms: Atoms, sigmas: Any, rng: np.random.Generator) -> Atoms:
    """Atoms displaced by Gaussian noise of rms ``sigmas`` (Å, per atom) in x, y and z."""
    pos = np.asarray(atoms.positions, np.float64)
    s = np.asarray(sigmas, np.float64)[:, None]
    pos = pos + rng.standard_normal(pos.shape) * s
    pos[:, 0] %= atoms.cell[0]
    pos[:, 1] %= atoms.cell[1]
    pos[:, 2] = np.clip(pos[:, 2], 0.0, atoms.cell[2] - 1e-6)
    return Atoms(pos.astype(np.asarray(atoms.positions).dtype), atoms.numbers, atoms.cell, sigmas=atoms.sigmas)


def _atom_sigmas(atoms: Atoms, sigmas: Any) -> np.ndarray:
    numbers = np.asarray(atoms.numbers)
    if isinstance(sigmas, Mapping):
        from ptyro_workflows._elements import atomic_number

        out = np.asarray(atoms.sigmas, np.float64).copy()
        for sym, v in sigmas.items():
            out[numbers == atomic_number(sym, "[frozen_phonons] sigmas")] = float(v)
        return out
    if float(sigmas) > 0:
        return np.full(numbers.shape, float(sigmas))
    return np.asarray(atoms.sigmas, np.float64)


def _make_batch_fn(simulator: Callable[..., Any], options: Mapping[str, Any]) -> Callable[..., Any]:
    """The jitted batch function (cached per simulator and options, so repeated simulations of
    the same shapes compile once)."""
    try:
        key = (simulator, tuple(sorted(options.items())))
        hash(key)
    except TypeError:
        return _build_batch_fn(simulator, dict(options))
    if key not in _BATCH_FNS:
        _BATCH_FNS[key] = _build_batch_fn(simulator, dict(options))
    return _BATCH_FNS[key]


_BATCH_FNS: dict[Any, Callable[..., Any]] = {}


def _build_batch_fn(simulator: Callable[..., Any], opts: dict[str, Any]) -> Callable[..., Any]:

    def batch(pos: Any, potentials: PotentialSlices, probe: ProbeModes) -> Any:
        n = potentials.array.shape[0]

        def one(acc: Any, pot: PotentialSlices) -> tuple[Any, None]:
            return acc + simulator(pot, probe, **opts)(pos), None

        zero = jnp.zeros((pos.shape[0],) + tuple(probe.array.shape[-2:]), jnp.real(probe.array).dtype)
        total, _ = jax.lax.scan(one, zero, potentials)
        return total / n

    return jax.jit(batch)


def _batches(simulator: Any, pots: list[PotentialSlices], probe: ProbeModes, positions: ScanPositions, masks: Mapping[str, Any], options: Mapping[str, Any], batch_size: int, want_patterns: bool, progress: bool) -> Any:
    """Yield ``(start, stop, {"pixelated": (b, nx, ny), <detector>: (b,)})`` batch by batch:
    through :func:`ptyro_simul.stem.iter_4dstem` and its detectors when available, else through
    :func:`ptyro_core.pipeline.map_batches` here."""
    try:
        from ptyro_simul.detectors import AnnularDetector, PixelatedDetector
        from ptyro_simul.stem import iter_4dstem
    except ImportError:
        iter_4dstem = None
    if iter_4dstem is not None:
        dets: dict[str, Any] = {name: AnnularDetector(*rng, name=name) for name, rng in masks.items()}
        if want_patterns:
            dets["pixelated"] = PixelatedDetector()
        if not dets:  # nothing to record: still run, so errors show
            dets["pixelated"] = PixelatedDetector()
        yield from iter_4dstem(pots, probe, positions, detectors=dets, batch_size=batch_size, simulator=simulator, progress=progress, **options)
        return
    stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *pots)
    batch_fn = _make_batch_fn(simulator, options)
    mask_arrays = virtual_masks(probe.grid, probe.energy, masks)
    with progress_bar(total=len(positions), desc="4D-STEM", unit="pos", disable=not progress) as bar:
        for start, stop, batch in map_batches(batch_fn, positions.positions, stacked, probe, batch_size=batch_size, mesh=device_mesh(), progress=bar.update):
            arr = np.asarray(batch, np.float32)
            out = {name: np.einsum("bxy,xy->b", arr, m, dtype=np.float64) for name, m in mask_arrays.items()}
            out["pixelated"] = arr
            yield start, stop, out


def _simulator(name: str) -> Any:
    from ptyro_core import UnknownComponentError, get_registry

    if name == "multislice" and "multislice" not in get_registry().names("simulator"):
        from ptyro_workflows._fallback import multislice

        return multislice  # stand-in until ptyro_simul registers its own
    try:
        return get("simulator", name)
    except UnknownComponentError:
        raise


def simulate(
    config: Any = None,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    keep: bool = True,
    command: list[str] | None = None,
) -> SimulationResult:
    """Simulate a 4D-STEM dataset from a configuration (a TOML path or a dict of tables).

    With ``out``, the patterns are written batch by batch into an EMD 1.0 file (atomically:
    nothing is left behind on failure); ``keep=False`` then skips holding the 4D array in memory
    (``result.dataset`` is None). Virtual detector images are returned (and stored) by name.

    >>> from ptyro_workflows import simulate
    >>> r = simulate({"specimen": {"structure": "SrTiO3"}, "potential": {"gpts": [32, 32]},
    ...               "probe": {"semiangle_cutoff": 20.0}, "scan": {"gpts": [2, 2]},
    ...               "detectors": {"bf": [0, 20]}}, progress=False)   # doctest: +SKIP
    >>> r.dataset.array.shape                                            # doctest: +SKIP
    (2, 2, 32, 32)
    """
    cfg = simulation_config(config)
    if out is not None:
        check_output(out, overwrite)
    spec, pot_cfg, probe_cfg = cfg["specimen"], cfg["potential"], cfg["probe"]
    sim_cfg, fp = cfg["simulation"], cfg["frozen_phonons"]
    # resolve every component by name, outside jit (errors name the known components)
    potential_fn = get("potential", pot_cfg["parametrization"])
    get("probe", probe_cfg["name"])
    simulator = _simulator(sim_cfg["simulator"])
    get("propagator", sim_cfg["propagator"])

    # cheap checks first, so bad input fails before anything is computed
    atoms = build_specimen(spec)
    grid = potential_grid(atoms, pot_cfg)
    energy = float(probe_cfg["energy"])
    positions = scan_positions(cfg["scan"], grid.extent)
    masks = {k: v for k, v in cfg["detectors"].items() if k != "pixelated"}
    virtual_masks(grid, energy, masks)  # checks the angles against the band limit
    sigmas = _atom_sigmas(atoms, fp["sigmas"])
    probe = build_probe(grid, probe_cfg)

    def make_potential(a: Atoms) -> PotentialSlices:
        return potential_fn(a, grid, slice_thickness=float(pot_cfg["slice_thickness"]), projection=str(pot_cfg["projection"]))

    nconf = int(fp["configurations"])
    rng = np.random.default_rng(int(fp["seed"]))
    frozen = nconf > 1 or bool(np.any(sigmas > 0))
    with progress_bar(total=1 + (nconf if frozen else 0), desc=f"potential ({pot_cfg['parametrization']})", unit="config", disable=not progress) as bar:
        static_potential = make_potential(atoms)
        jax.block_until_ready(static_potential.array)
        bar.update(1)
        pots = [static_potential]
        if frozen:
            pots = []
            for _ in range(nconf):
                pots.append(make_potential(_displaced(atoms, sigmas, rng)))
                bar.update(1)

    options = {"propagator": sim_cfg["propagator"], **dict(sim_cfg.get("options") or {})}
    used = [
        ("potential", pot_cfg["parametrization"]),
        ("probe", probe_cfg["name"]),
        ("simulator", sim_cfg["simulator"]),
        ("propagator", sim_cfg["propagator"]),
    ]
    prov = make_provenance("simulation", cfg, used, int(fp["seed"]), command=command)

    scan_shape = positions.shape
    total = len(positions)
    pixelated = bool(cfg["detectors"]["pixelated"])
    want_patterns = pixelated or keep
    images = {name: np.zeros(scan_shape[0] * scan_shape[1], np.float64) for name in masks}
    keep_arr = np.zeros((total, *grid.gpts), np.float32) if keep else None
    writer = None
    if out is not None and is_writer():
        writer = DatasetWriter(
            out, scan_shape=scan_shape, positions=positions.positions, grid=grid, energy=energy, provenance=prov, overwrite=overwrite,
            store_patterns=pixelated,
        )
    try:
        for start, stop, signals in _batches(simulator, pots, probe, positions, masks, options, int(sim_cfg["batch_size"]), want_patterns, progress):
            if "pixelated" in signals:
                arr = np.asarray(signals["pixelated"], np.float32)
                if writer is not None:
                    writer.write(start, stop, arr)
                if keep_arr is not None:
                    keep_arr[start:stop] = arr
            elif writer is not None:
                writer.write(start, stop, np.zeros((stop - start, 0, 0), np.float32))
            for name in masks:
                images[name][start:stop] = np.asarray(signals[name], np.float64)
        images2d = {k: v.reshape(scan_shape) for k, v in images.items()}
        if writer is not None:
            for name, img in images2d.items():
                writer.add_image(name, img)
            writer.add_array("projected_potential", np.asarray(jnp.sum(static_potential.array, axis=0)), grid.sampling, "V*A")
            path = writer.close()
            writer = None
        else:
            path = None
    except BaseException:
        if writer is not None:
            writer._abort()
        raise
    dataset = None
    if keep_arr is not None:
        dataset = Dataset4D(keep_arr.reshape(*scan_shape, *grid.gpts), positions.positions, grid=grid, energy=energy)
    return SimulationResult(dataset=dataset, images=images2d, potential=static_potential, probe=probe, config=cfg, path=path, provenance=prov)

"""The simulation pipeline: configuration → structure → potential → probe → 4D-STEM dataset.

Every component is looked up by its registry name (potential parametrization, probe,
simulator, propagator), outside ``jit``, so a third-party plugin works the moment it is
installed. Patterns are computed batch by batch through :func:`ptyro_simul.stem.iter_4dstem`
(sharded over every device) and, when an output path is given, written into the HDF5 file as
they arrive, so memory is bounded by the batch, not by the scan.
"""

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import jax
import jax.numpy as jnp
import numpy as np

from ptyro_core import Atoms, Dataset4D, Grid, PotentialSlices, ProbeModes, PtyroValueError, ScanPositions, get
from ptyro_core.pipeline import is_writer
from ptyro_workflows.config import aberrations_for_api, simulation_config
from ptyro_workflows.io import DatasetWriter, check_output
from ptyro_workflows.preflight import check_finite, check_plan, plan_simulation
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
    from ptyro_simul import structures

    name = str(specimen["structure"])
    repeat = tuple(int(v) for v in specimen.get("repeat", (1, 1, 1)))
    zone = tuple(int(v) for v in specimen.get("zone_axis", (0, 0, 1)))
    looks_like_path = any(name.lower().endswith(ext) for ext in (".xyz", ".extxyz", ".cif", ".vasp", ".poscar")) or "/" in name or name.upper() in ("POSCAR", "CONTCAR")
    if looks_like_path:
        p = Path(name)
        if not p.exists():
            raise PtyroValueError(f"[specimen] structure: file {name!r} not found; expected a built-in crystal name or a structure file (.xyz, .extxyz, .cif, .vasp)")
        atoms = structures.read_structure(p)
        if zone != (0, 0, 1):
            _unsupported_zone(zone)
        return _repeat(atoms, repeat) if repeat != (1, 1, 1) else atoms
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


def _pattern_grid(grid: Grid, options: dict[str, Any]) -> Grid:
    """The grid the probe lives on and the patterns are the FFT of: the potential's, or with
    ``[simulation.options] window = [wx, wy]`` a wx × wy window of it (same sampling; each probe
    is then propagated in a crop of the periodic potential around it, see
    ``ptyro_simul.multislice.multislice``). Normalises ``options["window"]`` to a tuple."""
    win = options.get("window")
    if win is None:
        return grid
    try:
        wx, wy = (int(v) for v in win)
        if (wx, wy) != tuple(float(v) for v in win):
            raise ValueError
    except (TypeError, ValueError):
        raise PtyroValueError(f"[simulation.options] window: expected two whole numbers of pixels [wx, wy], got {win!r}") from None
    from ptyro_simul.multislice import check_window

    options["window"] = check_window((wx, wy), grid, "[simulation.options] window")
    return Grid(options["window"], grid.sampling)


def _sigma_spec(sigmas: Any) -> Any:
    """The ``[frozen_phonons] sigmas`` value for :mod:`ptyro_simul.phonons` (None: use the
    atoms' own)."""
    if isinstance(sigmas, Mapping):
        return dict(sigmas)
    return float(sigmas) if float(sigmas) > 0 else None


def _batches(simulator: Any, pots: list[PotentialSlices], probe: ProbeModes, positions: ScanPositions, ranges: Mapping[str, Any], options: Mapping[str, Any], batch_size: int, want_patterns: bool, progress: bool) -> Any:
    """Yield ``(start, stop, {"pixelated": (b, nx, ny), <detector>: (b,)})`` batch by batch
    through :func:`ptyro_simul.stem.iter_4dstem` (sharded over every device, memory bounded by
    the batch) with its pixelated and annular detectors."""
    from ptyro_simul.detectors import AnnularDetector, PixelatedDetector
    from ptyro_simul.stem import iter_4dstem

    dets: dict[str, Any] = {name: AnnularDetector(*rng, name=name) for name, rng in ranges.items()}
    if want_patterns or not dets:
        dets["pixelated"] = PixelatedDetector()
    yield from iter_4dstem(pots, probe, positions, detectors=dets, batch_size=batch_size, simulator=simulator, progress=progress, **options)


def simulate(
    config: Any = None,
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    keep: bool = True,
    command: list[str] | None = None,
    force: bool = False,
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
    # sized from the configuration before anything is built: refuses what cannot fit in memory, or
    # on disk unless ``force``
    check_plan(plan_simulation(cfg, out, keep=keep), force=force)
    spec, pot_cfg, probe_cfg = cfg["specimen"], cfg["potential"], cfg["probe"]
    sim_cfg, fp = cfg["simulation"], cfg["frozen_phonons"]
    # resolve every component by name, outside jit (errors name the known components)
    potential_fn = get("potential", pot_cfg["parametrization"])
    get("probe", probe_cfg["name"])
    simulator = get("simulator", sim_cfg["simulator"])
    get("propagator", sim_cfg["propagator"])

    # cheap checks first, so bad input fails before anything is computed
    atoms = build_specimen(spec)
    grid = potential_grid(atoms, pot_cfg)
    energy = float(probe_cfg["energy"])
    positions = scan_positions(cfg["scan"], grid.extent)
    options = {"propagator": sim_cfg["propagator"], **dict(sim_cfg.get("options") or {})}
    pattern_grid = _pattern_grid(grid, options)
    masks = {k: v for k, v in cfg["detectors"].items() if k != "pixelated"}
    virtual_masks(pattern_grid, energy, masks)  # checks the angles against the band limit
    from ptyro_simul.phonons import frozen_phonon_configurations, thermal_sigmas

    sigma_spec = _sigma_spec(fp["sigmas"])
    sigmas = thermal_sigmas(atoms, sigma_spec)  # unknown elements fail here, before any work
    probe = build_probe(pattern_grid, probe_cfg)

    def make_potential(a: Atoms) -> PotentialSlices:
        return potential_fn(a, grid, slice_thickness=float(pot_cfg["slice_thickness"]), projection=str(pot_cfg["projection"]))

    nconf = int(fp["configurations"])
    frozen = nconf > 1 or bool(np.any(sigmas > 0))
    with progress_bar(total=1 + (nconf if frozen else 0), desc=f"potential ({pot_cfg['parametrization']})", unit="config", disable=not progress) as bar:
        static_potential = make_potential(atoms)
        check_finite(static_potential.array, components=[("potential", pot_cfg["parametrization"])], what="the potential slices")
        bar.update(1)
        pots = [static_potential]
        if frozen:
            pots = []
            for displaced in frozen_phonon_configurations(atoms, nconf, seed=int(fp["seed"]), sigmas=sigma_spec):
                pots.append(make_potential(displaced))
                bar.update(1)

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
    keep_arr = np.zeros((total, *pattern_grid.gpts), np.float32) if keep else None
    writer = None
    if out is not None and is_writer():
        writer = DatasetWriter(
            out, scan_shape=scan_shape, positions=positions.positions, grid=pattern_grid, energy=energy, provenance=prov, overwrite=overwrite,
            store_patterns=pixelated,
        )
    sim_components = [("simulator", sim_cfg["simulator"]), ("propagator", sim_cfg["propagator"]), ("potential", pot_cfg["parametrization"])]
    try:
        for start, stop, signals in _batches(simulator, pots, probe, positions, masks, options, int(sim_cfg["batch_size"]), want_patterns, progress):
            if "pixelated" in signals:
                arr = check_finite(signals["pixelated"], components=sim_components, what=f"the patterns of positions {start}:{stop}").astype(np.float32, copy=False)
                if writer is not None:
                    writer.write(start, stop, arr)
                if keep_arr is not None:
                    keep_arr[start:stop] = arr
            elif writer is not None:
                writer.write(start, stop, np.zeros((stop - start, 0, 0), np.float32))
            for name in masks:
                images[name][start:stop] = check_finite(signals[name], components=sim_components, what=f"detector {name!r} at positions {start}:{stop}")
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
        dataset = Dataset4D(keep_arr.reshape(*scan_shape, *pattern_grid.gpts), positions.positions, grid=pattern_grid, energy=energy)
    return SimulationResult(dataset=dataset, images=images2d, potential=static_potential, probe=probe, config=cfg, path=path, provenance=prov)

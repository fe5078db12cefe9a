"""The simulation pipeline: configuration → structure → potential → probe → 4D-STEM dataset.

Every component is looked up by its registry name (potential parametrization, probe,
simulator, propagator), outside ``jit``, so a third-party plugin works the moment it is
installed. Patterns are computed batch by batch through :func:`ptyro_simul.stem.iter_4dstem`
(sharded over every device) and, when an output path is given, written into the HDF5 file as
they arrive, so memory is bounded by the batch, not by the scan.
"""

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import jax.numpy as jnp
import numpy as np

from ptyro_core import Atoms, Dataset4D, Grid, PotentialSlices, ProbeModes, PtyroValueError, ScanPositions, get
from ptyro_core.pipeline import is_writer
from ptyro_workflows.config import aberrations_for_api, annular_detectors, simulation_config
from ptyro_workflows.io import DatasetWriter, check_output
from ptyro_workflows.preflight import check_finite, check_plan, plan_simulation
from ptyro_workflows.progress import progress_bar
from ptyro_workflows.provenance import make_provenance

__all__ = [
    "SimulationResult",
    "build_specimen",
    "build_potential",
    "build_probe",
    "scan_positions",
    "virtual_masks",
    "electrons_per_position",
    "poisson_counts",
    "simulate",
]


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

    def __repr__(self) -> str:
        shape = "not kept" if self.dataset is None else f"{tuple(self.dataset.array.shape)} (Rx, Ry, Qx, Qy)"
        spec = self.config.get("specimen", {})
        probe = self.config.get("probe", {})
        images = ", ".join(f"{k} mean {float(np.mean(v)):.3g}" for k, v in self.images.items()) or "none"
        return (
            f"SimulationResult({spec.get('structure')} {spec.get('zone_axis')}, {float(probe.get('energy', 0)) / 1e3:g} keV, "
            f"{float(probe.get('semiangle_cutoff', 0)):g} mrad; patterns {shape}; virtual images: {images}; file: {self.path})"
        )

    def _repr_html_(self) -> str:
        import html

        rows = [("patterns", "not kept" if self.dataset is None else f"{tuple(self.dataset.array.shape)} (Rx, Ry, Qx, Qy)")]
        rows += [
            (f"[{t}]", ", ".join(f"{k} = {v}" for k, v in self.config.get(t, {}).items() if k != "options")) for t in ("specimen", "probe", "scan", "detectors")
        ]
        rows += [(f"virtual {k}", f"{v.shape}, mean {float(np.mean(v)):.4g}") for k, v in self.images.items()]
        rows.append(("file", str(self.path)))
        body = "".join(f"<tr><td style='text-align:left'>{html.escape(a)}</td><td style='text-align:left'>{html.escape(b)}</td></tr>" for a, b in rows)
        return f"<b>SimulationResult</b><table>{body}</table>"

    def show(self, out: str | Path | None = None, **kwargs: Any) -> dict[str, Any]:
        """Draw the figures of ``ptyro show`` (mean pattern, virtual images, iDPC, CBED, the
        projected potential) into ``out`` (default: beside the file, or a temporary directory
        when nothing was written); shown inline in a notebook. Returns what
        :func:`ptyro_workflows.show.show_file` returns."""
        import tempfile

        from ptyro_workflows.io import save_dataset
        from ptyro_workflows.show import display_inline, show_file

        path = self.path
        if path is None:
            if self.dataset is None:
                raise PtyroValueError("SimulationResult.show: no file and no patterns kept; simulate with out=... or keep=True")
            tmp = Path(tempfile.mkdtemp(prefix="ptyro-show-"))
            sampling = self.potential.grid.sampling
            path = save_dataset(
                tmp / "dataset.h5",
                self.dataset,
                images=self.images,
                arrays={"projected_potential": (self.projected_potential, sampling, "V*A")},
                provenance=self.provenance,
            )
            out = out or tmp
        res = show_file(path, out, **kwargs)
        display_inline(res["files"])
        return res

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


def is_structure_path(name: str) -> bool:
    """Whether a ``[specimen] structure`` string names a structure file (else a built-in crystal)."""
    return any(name.lower().endswith(ext) for ext in (".xyz", ".extxyz", ".cif", ".vasp", ".poscar")) or "/" in name or name.upper() in ("POSCAR", "CONTCAR")


def build_specimen(specimen: Mapping[str, Any]) -> Atoms:
    """Atoms from a ``[specimen]`` table: a built-in crystal name, a structure file or (Python
    API) an ``ase.Atoms`` / :class:`ptyro_core.Atoms`, oriented along ``zone_axis`` and repeated."""
    from ptyro_simul import structures

    obj = specimen["structure"]
    rep = [int(v) for v in specimen.get("repeat", (1, 1, 1))]
    if len(rep) != 3:
        raise PtyroValueError(f"[specimen] repeat: expected three whole numbers [nx, ny, nz], got {specimen.get('repeat')!r}")
    repeat = (rep[0], rep[1], rep[2])
    zone = tuple(int(v) for v in specimen.get("zone_axis", (0, 0, 1)))
    if isinstance(obj, Atoms):
        if zone != (0, 0, 1):
            raise PtyroValueError(
                f"[specimen] zone_axis {list(zone)}: a ptyro_core.Atoms has no lattice to orient; give an ase.Atoms or a structure file, or zone_axis [0, 0, 1]"
            )
        atoms = obj
    elif not isinstance(obj, str):
        atoms = structures.atoms_from_ase(obj, zone)
    else:
        name = obj
        if not is_structure_path(name):
            return structures.build_crystal(name, repeat=repeat, zone_axis=zone)
        p = Path(name)
        if not p.exists():
            raise PtyroValueError(
                f"[specimen] structure: file {name!r} not found; expected a built-in crystal name or a structure file (.xyz, .extxyz, .cif, .vasp)"
            )
        atoms = structures.read_structure(p, zone_axis=zone)
    return _repeat(atoms, repeat) if repeat != (1, 1, 1) else atoms


def _structure_record(atoms: Atoms, obj: Any) -> tuple[str, str]:
    """(a one-line description, extended-XYZ text) of an in-memory structure, for provenance."""
    from ptyro_simul.elements import symbol

    nums = np.asarray(atoms.numbers)
    cell = atoms.cell
    lines = [str(len(nums)), f'Lattice="{cell[0]!r} 0 0 0 {cell[1]!r} 0 0 0 {cell[2]!r}" Properties=species:S:1:pos:R:3']
    lines += [f"{symbol(int(z))} {x:.6f} {y:.6f} {zz:.6f}" for z, (x, y, zz) in zip(nums, np.asarray(atoms.positions, np.float64))]
    return f"<{type(obj).__module__}.{type(obj).__name__}: {len(nums)} atoms in the provenance's structure_xyz>", "\n".join(lines) + "\n"


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


def potential_grid(atoms: Atoms, potential: Mapping[str, Any], *, max_angle: float | None = None, energy: float | None = None) -> Grid:
    """The grid covering the cell from ``gpts`` or ``sampling`` (default 0.1 Å); ``gpts = "auto"``
    keeps ``max_angle`` (mrad) within ptyro_simul.convergence.SAFE_FRACTION of the band limit."""
    extent = (atoms.cell[0], atoms.cell[1])
    if potential.get("gpts") == "auto":  # issue 14: automatic grid
        from ptyro_simul.convergence import auto_gpts

        return Grid.from_extent(extent, gpts=auto_gpts(extent, float(max_angle or 0.0), float(energy or 0.0)))
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
    for name, rng in annular_detectors(detectors).items():
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


def electrons_per_position(detectors: Mapping[str, Any], positions: ScanPositions) -> float | None:
    """Electrons per probe position from ``[detectors] dose`` (e⁻/Å² over the scan step area)
    or ``dose_per_position``; None without a dose."""
    if detectors.get("dose_per_position") is not None:
        return float(detectors["dose_per_position"])
    if detectors.get("dose") is None:
        return None
    rx, ry = positions.shape
    pos = np.asarray(positions.positions, np.float64).reshape(rx, ry, 2)
    if rx < 2 or ry < 2:
        raise PtyroValueError(
            f"[detectors] dose: a dose in e⁻/Å² needs a 2D raster to give the area per position, got scan {rx} x {ry}; use dose_per_position (e⁻)"
        )
    area = abs(float(pos[1, 0, 0] - pos[0, 0, 0]) * float(pos[0, 1, 1] - pos[0, 0, 1]))
    return float(detectors["dose"]) * area


def poisson_counts(patterns: Any, electrons: float, seed: int, start: int) -> np.ndarray:
    """Seeded Poisson counts (uint32) of ``patterns`` (fractions of the beam, scan indices
    ``start``, ``start + 1``, ...) for ``electrons`` per position. Each pattern has its own
    random stream (seed, scan index), so the counts do not depend on the batch size."""
    p = np.clip(np.asarray(patterns, np.float64), 0.0, None)
    out = np.empty(p.shape, np.uint32)
    for i in range(p.shape[0]):
        out[i] = np.random.default_rng((int(seed), start + i)).poisson(p[i] * electrons)
    return out


def _sigma_spec(sigmas: Any) -> Any:
    """The ``[frozen_phonons] sigmas`` value for :mod:`ptyro_simul.phonons` (None: use the
    atoms' own)."""
    if isinstance(sigmas, Mapping):
        return dict(sigmas)
    return float(sigmas) if float(sigmas) > 0 else None


def _batches(
    simulator: Any,
    pots: list[PotentialSlices],
    probe: ProbeModes,
    positions: ScanPositions,
    ranges: Mapping[str, Any],
    options: Mapping[str, Any],
    batch_size: int,
    want_patterns: bool,
    progress: bool,
    record: dict[str, Any] | None = None,
) -> Any:
    """Yield ``(start, stop, {"pixelated": (b, nx, ny), <detector>: (b,)})`` batch by batch
    through :func:`ptyro_simul.stem.iter_4dstem` (sharded over every device, memory bounded by
    the batch) with its pixelated and annular detectors."""
    from ptyro_simul.detectors import AnnularDetector, PixelatedDetector
    from ptyro_simul.stem import iter_4dstem

    dets: dict[str, Any] = {name: AnnularDetector(float(rng[0]), float(rng[1]), name=name) for name, rng in ranges.items()}
    if want_patterns or not dets:
        dets["pixelated"] = PixelatedDetector()
    yield from iter_4dstem(pots, probe, positions, detectors=dets, batch_size=batch_size, simulator=simulator, progress=progress, record=record, **options)


# long: the simulation pipeline read top to bottom (every check before any work, the potentials, the provenance, the batch loop with the writer's abort path); each step is a helper call
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
    structure_extra: dict[str, Any] = {}
    if not isinstance(spec["structure"], str):
        spec["structure"], structure_extra["structure_xyz"] = _structure_record(atoms, spec["structure"])
    energy = float(probe_cfg["energy"])
    # issue 14: the largest detector angle (else twice the aperture) sets gpts = "auto"
    outer = [float(v[1]) for v in annular_detectors(cfg["detectors"]).values()]
    grid = potential_grid(atoms, pot_cfg, max_angle=max(outer, default=2 * float(probe_cfg["semiangle_cutoff"])), energy=energy)
    positions = scan_positions(cfg["scan"], grid.extent)
    options = {"propagator": sim_cfg["propagator"], **dict(sim_cfg.get("options") or {})}
    if str(sim_cfg.get("backend", "auto")) != "auto":  # a simulator that knows no back ends is not handed one
        options["backend"] = sim_cfg["backend"]
    pattern_grid = _pattern_grid(grid, options)
    masks = annular_detectors(cfg["detectors"])
    virtual_masks(pattern_grid, energy, masks)  # checks the angles against the band limit
    from ptyro_simul.convergence import band_limit_message, check_band_limit

    if command is None:  # issue 14: warn when not converged (the command prints one clean line)
        check_band_limit(pattern_grid, energy, masks, stacklevel=2)
    elif (msg := band_limit_message(pattern_grid, energy, masks)) is not None:
        print(f"{' '.join(command[:2])}: warning: {msg}", file=sys.stderr)
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
    electrons = electrons_per_position(cfg["detectors"], positions)
    from ptyro_workflows.cache import cache_record

    dose_record: dict[str, Any] = {"dose": "none (noise-free fractions of the beam)"}
    if electrons is not None:
        dose_record = {
            "dose": f"{electrons:.6g} e- per probe position, Poisson counts (uint32), seed {int(cfg['detectors']['dose_seed'])}",
            "electrons_per_position": electrons,
        }
    # what the run actually uses (back end, streams, memory budget), filled in as it starts
    execution: dict[str, Any] = {}
    prov = make_provenance(
        "simulation", cfg, used, int(fp["seed"]), command=command, extra={**dose_record, **cache_record(), **structure_extra, "execution": execution}
    )

    scan_shape = positions.shape
    total = len(positions)
    pixelated = bool(cfg["detectors"]["pixelated"])
    want_patterns = pixelated or keep
    images = {name: np.zeros(scan_shape[0] * scan_shape[1], np.float64) for name in masks}
    keep_arr = np.zeros((total, *pattern_grid.gpts), np.float32) if keep else None
    writer = None
    if out is not None and is_writer():
        writer = DatasetWriter(
            out,
            scan_shape=scan_shape,
            positions=positions.positions,
            grid=pattern_grid,
            energy=energy,
            provenance=prov,
            overwrite=overwrite,
            store_patterns=pixelated,
            dtype=np.uint32 if electrons is not None else np.float32,
            calibration={"electrons_per_position": electrons} if electrons is not None else None,
        )
    sim_components = [("simulator", sim_cfg["simulator"]), ("propagator", sim_cfg["propagator"]), ("potential", pot_cfg["parametrization"])]
    try:
        for start, stop, signals in _batches(simulator, pots, probe, positions, masks, options, int(sim_cfg["batch_size"]), want_patterns, progress, execution):
            if "pixelated" in signals:
                arr = check_finite(signals["pixelated"], components=sim_components, what=f"the patterns of positions {start}:{stop}").astype(
                    np.float32, copy=False
                )
                if electrons is not None:
                    arr = poisson_counts(arr, electrons, int(cfg["detectors"]["dose_seed"]), start)
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

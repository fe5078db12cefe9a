"""Pre-flight checks: what a run will need (memory, disk, time), from its configuration, before
anything is built; the plausibility of calibrations; and the checks of what components return.

* :func:`plan_simulation` / :func:`plan_reconstruction` size a run from the configuration
  alone (sizes are Python integers, so an absurd grid cannot overflow): the arrays it will
  hold, the peak memory, the file it will write, and a rough time. :func:`check_plan` refuses
  a run that will not fit in memory (naming the knob) or on disk (naming ``--force``).
  ``ptyro simulate --dry-run`` and ``ptyro reconstruct --dry-run`` print the plan
  (:func:`format_plan`) and stop.
* :func:`check_calibration`: a detector pixel that puts the bright-field disk (the aperture's
  cut-off) under one pixel means a real-space pixel far below what the aperture can transfer
  (a calibration typed in the wrong unit); it is refused with the value and the plausible one.
* :func:`check_finite`: a component's output checked at the boundary (type and finiteness),
  a failure naming the component and its distribution.

The time estimate is an order of magnitude, not a promise: the FFT work of the multislice or
of the reconstruction's forward and backward passes at 1 GFLOP/s per CPU core (what the
benchmarks measure on the XLA path; an accelerator is faster).
"""

import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from ptyro_core import PtyroTypeError, PtyroValueError, get_registry
from ptyro_core.errors import MemoryBudgetError

__all__ = ["Plan", "plan_simulation", "plan_reconstruction", "check_plan", "format_plan", "check_calibration", "check_finite"]

_FLOPS = 1e9  # per CPU core, the order of magnitude of the XLA path's FFT work


@attrs.frozen
class Plan:
    """What a run will need: ``arrays`` (name -> (shape, bytes)), ``memory`` (peak bytes),
    ``disk`` (bytes of the files written), ``directory`` (where they go, None: nothing written),
    ``seconds`` (rough), ``knob`` (what reduces the memory)."""

    what: str
    arrays: dict[str, tuple[tuple[int, ...], int]]
    memory: int
    disk: int
    directory: str | None
    seconds: float
    knob: str


def _fmt(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.3g} PiB"


def _fft_flops(n: int) -> float:
    return 5.0 * n * math.log2(max(n, 2))


def _pair(v: Any, what: str) -> tuple[int, int]:
    try:
        a, b = (int(x) for x in v)
    except (TypeError, ValueError):
        raise PtyroTypeError(f"{what}: expected two whole numbers [x, y], got {v!r}") from None
    return a, b


def _cell(spec: Mapping[str, Any]) -> tuple[tuple[float, float, float], int]:
    """The specimen's cell (Å) and number of atoms, without tiling the repeat."""
    from ptyro_simul import structures

    repeat = tuple(int(v) for v in spec.get("repeat", (1, 1, 1)))
    if not isinstance(spec["structure"], str):  # Python API: an ase.Atoms or a ptyro_core.Atoms, one cell
        from ptyro_workflows.simulate import build_specimen

        atoms = build_specimen({**spec, "repeat": (1, 1, 1)})
        return tuple(float(c) * r for c, r in zip(atoms.cell, repeat)), int(np.asarray(atoms.numbers).size) * math.prod(repeat)  # type: ignore[return-value]
    name = str(spec["structure"])
    from ptyro_workflows.simulate import is_structure_path

    looks_like_path = is_structure_path(name)
    if looks_like_path and Path(name).exists():
        atoms = structures.read_structure(Path(name))
    elif looks_like_path:
        return (0.0, 0.0, 0.0), 0  # the simulation itself names the missing file
    else:
        atoms = structures.build_crystal(name, zone_axis=tuple(int(v) for v in spec.get("zone_axis", (0, 0, 1))))
    cell = tuple(float(c) * r for c, r in zip(atoms.cell, repeat))
    return cell, int(np.asarray(atoms.numbers).size) * math.prod(repeat)  # type: ignore[return-value]


def plan_simulation(cfg: Mapping[str, Any], out: str | os.PathLike | None = None, *, keep: bool = True) -> Plan:
    """The plan of :func:`ptyro_workflows.simulate` for a validated configuration."""
    spec, pot, scan, sim = cfg["specimen"], cfg["potential"], cfg["scan"], cfg["simulation"]
    cell, n_atoms = _cell(spec)
    if pot.get("gpts") == "auto":  # the grid simulate() will choose (issue 14): from the largest annular detector
        from ptyro_simul.convergence import auto_gpts
        from ptyro_workflows.config import annular_detectors

        outer = [float(v[1]) for v in annular_detectors(cfg.get("detectors") or {}).values()]
        max_angle = max(outer, default=2 * float(cfg["probe"]["semiangle_cutoff"]))
        gx, gy = auto_gpts(cell[:2], max_angle, float(cfg["probe"]["energy"]))
    elif pot.get("gpts") is not None:
        gx, gy = _pair(pot["gpts"], "[potential] gpts")
    else:
        s: Any = pot.get("sampling") or 0.1
        sx, sy = (float(s), float(s)) if np.ndim(s) == 0 else (float(s[0]), float(s[1]))
        gx, gy = (max(1, math.ceil(c / d - 1e-9)) for c, d in zip(cell[:2], (sx, sy)))
    slices = max(1, math.ceil(cell[2] / float(pot["slice_thickness"]) - 1e-9)) if cell[2] > 0 else 1
    win = (sim.get("options") or {}).get("window")
    try:
        px, py = _pair(win, "[simulation.options] window") if win is not None else (gx, gy)
    except PtyroTypeError:  # the simulation's own check names a malformed window
        px, py = gx, gy
    if scan.get("step") is not None and scan.get("gpts") is None:
        start = scan.get("start") or [0.0, 0.0]
        end = scan.get("end") or list(cell[:2])
        rx, ry = (max(1, math.ceil((e - s0) / d - 1e-9)) for s0, e, d in zip(start, end, scan["step"]))
    else:
        rx, ry = _pair(scan.get("gpts") or [16, 16], "[scan] gpts")
    fp = cfg["frozen_phonons"]
    nconf = max(1, int(fp["configurations"]))
    batch = min(int(sim["batch_size"]), rx * ry)
    from ptyro_workflows.config import annular_detectors

    dets = list(annular_detectors(cfg["detectors"]))  # the masks, not the table's settings (pixelated, dose, ...)
    pixelated = bool(cfg["detectors"]["pixelated"])
    arrays: dict[str, tuple[tuple[int, ...], int]] = {
        "atoms": ((n_atoms, 3), n_atoms * 20),
        "potential slices": ((nconf, slices, gx, gy), nconf * slices * gx * gy * 4),
        "transmission (per configuration)": ((slices, gx, gy), slices * gx * gy * 8),
        "probe": ((px, py), px * py * 8),
        "batch of waves (with FFT work space)": ((batch, px, py), batch * px * py * 8 * 6),
    }
    if dets:  # masks only when detectors are asked for
        arrays["detector masks"] = ((len(dets), px, py), len(dets) * px * py * 4)
    if keep:
        arrays["4D data in memory"] = ((rx, ry, px, py), rx * ry * px * py * 4)
    memory = sum(b for _, b in arrays.values()) + 256 * 2**20  # + the runtime itself
    disk = (rx * ry * px * py * 4 if pixelated else 0) + rx * ry * (len(dets) * 4 + 16) + gx * gy * 4 + 2**20
    flops = rx * ry * nconf * slices * 2 * _fft_flops(px * py)
    return Plan(
        what=f"simulation ({rx} x {ry} positions, patterns {px} x {py}, potential {gx} x {gy} x {slices} slices, {nconf} configuration(s))",
        arrays=arrays,
        memory=int(memory),
        disk=int(disk) if out is not None else 0,
        directory=None if out is None else str(Path(out).parent if str(Path(out).parent) else Path(".")),
        seconds=flops / (_FLOPS * (os.cpu_count() or 1)),
        knob="reduce [potential] gpts or sampling, [simulation] batch_size, the scan, [frozen_phonons] configurations, or use [simulation.options] window",
    )


def check_calibration(grid: Any, energy: float, semiangle_cutoff: float, *, source: str = "the dataset") -> None:
    """Refuse a detector calibration that puts the bright-field disk (``semiangle_cutoff`` mrad)
    under one detector pixel in radius: the real-space pixel is then far below anything the
    aperture can transfer (typically a calibration in the wrong unit)."""
    from ptyro_simul.constants import energy2wavelength

    lam = energy2wavelength(float(energy))
    dq = min(grid.reciprocal_sampling)
    radius = semiangle_cutoff * 1e-3 / lam / dq
    if radius < 1.0:
        plausible = semiangle_cutoff * 1e-3 / lam / (min(grid.gpts) / 4)
        raise PtyroValueError(
            f"calibration of {source}: a detector pixel of {dq:.4g} Å⁻¹ (real-space pixel {min(grid.sampling):.3g} Å) puts the "
            f"{semiangle_cutoff:g} mrad bright-field disk at {radius:.3g} pixels in radius, far below what the aperture can transfer; "
            f"expected a disk of several pixels (a detector pixel near {plausible:.3g} Å⁻¹): check --reciprocal-sampling / --sampling and their units"
        )


class _Shape:
    """A stand-in for an array that is only sized, never allocated."""

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.size = math.prod(shape)


def plan_reconstruction(dataset: Any, cfg: Mapping[str, Any], out: str | os.PathLike | None = None, *, checkpoint: Any = None) -> Plan:
    """The plan of :func:`ptyro_workflows.reconstruct` for a (possibly out-of-core) dataset and
    a validated configuration: the object and probe modes it would allocate, sized as
    :func:`ptyro_invert.initial_state` sizes them, before they exist."""
    from ptyro_core.pipeline import device_mesh
    from ptyro_invert import estimate_memory

    r = cfg["reconstruction"]
    qx, qy = (int(v) for v in dataset.array.shape[-2:])
    rx, ry = (int(v) for v in dataset.array.shape[:2])
    n = rx * ry
    d = np.asarray(dataset.grid.sampling, np.float64)
    pos = np.asarray(dataset.positions, np.float64)
    lo = np.floor(pos.min(axis=0) / d)
    ext = np.ceil(pos.max(axis=0) / d - lo)
    ox, oy = (int(e) + w + 2 * 8 + 1 for e, w in zip(ext, (qx, qy)))
    modes = int(r["num_modes"])
    if r["algorithm"] == "mixed_state":
        modes = max(modes, int((r.get("options") or {}).get("num_modes") or 2))
    slices = int(r["num_slices"])
    state = type("S", (), {})()
    state.object = _Shape((slices, ox, oy), np.complex64)
    state.probe = _Shape((modes, qx, qy), np.complex64)
    state.positions = _Shape((n, 2), np.float32)
    ndev = int(device_mesh().size)
    memory = estimate_memory(tuple(dataset.array.shape), state, batch_size=int(r["batch_size"]), num_devices=ndev)
    if getattr(dataset, "is_lazy", False):
        memory -= n * qx * qy * 4 * 2
    params = (slices * ox * oy + modes * qx * qy) * 8 + n * 8
    arrays = {
        "object": ((slices, ox, oy), slices * ox * oy * 8),
        "probe modes": ((modes, qx, qy), modes * qx * qy * 8),
        "4D data": ((rx, ry, qx, qy), 0 if getattr(dataset, "is_lazy", False) else n * qx * qy * 4),
    }
    disk = params + int(r["iterations"]) * 4 + 2**20 if out is not None else 0
    if checkpoint is not None:
        disk += params * 4 + 2**20  # state, parameters and two optimizer moments
    flops = int(r["iterations"]) * n * modes * (slices + 1) * 3 * _fft_flops(qx * qy)
    return Plan(
        what=f"reconstruction '{r['algorithm']}' ({n} patterns {qx} x {qy}, object {ox} x {oy} x {slices} slice(s), {modes} probe mode(s))",
        arrays=arrays,
        memory=int(memory),
        disk=int(disk),
        directory=None if out is None else str(Path(out).parent if str(Path(out).parent) else Path(".")),
        seconds=flops / (_FLOPS * (os.cpu_count() or 1)),
        knob="reduce [reconstruction] batch_size, num_modes or num_slices, crop the scan, or check the calibration",
    )


def check_plan(plan: Plan, *, force: bool = False, budget: float | None = None) -> None:
    """Refuse a run that will not fit: in memory (always; the message names the knob) or on
    disk (unless ``force``; the message names ``--force``)."""
    from ptyro_core.pipeline import memory_budget

    budget = memory_budget() if budget is None else budget
    if plan.memory > budget:
        raise MemoryBudgetError(
            f"{plan.what} needs about {_fmt(plan.memory)} of memory but {_fmt(budget)} is available; {plan.knob} (--dry-run prints the sizes)"
        )
    if plan.directory is not None and not force:
        free = shutil.disk_usage(plan.directory).free
        if plan.disk > free:
            raise PtyroValueError(
                f"{plan.what} writes about {_fmt(plan.disk)} but only {_fmt(free)} is free in {plan.directory!r}; "
                f"free some space or choose another output directory (or pass --force to try anyway)"
            )


def format_plan(plan: Plan) -> list[str]:
    """The lines of ``--dry-run``."""
    from ptyro_core.pipeline import memory_budget

    lines = [f"dry run: {plan.what}", "  arrays:"]
    for name, (shape, nbytes) in plan.arrays.items():
        lines.append(f"    {name:38s} {' x '.join(str(s) for s in shape):>24s}  {_fmt(nbytes)}")
    lines.append(f"  memory: about {_fmt(plan.memory)} needed, {_fmt(memory_budget())} available")
    if plan.directory is not None:
        lines.append(f"  disk: about {_fmt(plan.disk)} needed, {_fmt(shutil.disk_usage(plan.directory).free)} free in {plan.directory!r}")
    s = plan.seconds
    when = f"{s:.0f} s" if s < 120 else (f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h")
    lines.append(f"  time: roughly {when} on {os.cpu_count()} CPU core(s) (an order of magnitude; accelerators are faster)")
    lines.append("  nothing was computed or written")
    return lines


def check_finite(value: Any, *, components: Any, what: str) -> np.ndarray:
    """``value`` as a NumPy array of numbers with only finite values; otherwise raise naming the
    components that made it (``[(kind, name), ...]``, each with its distribution and version)
    and ``what``."""
    reg = get_registry()
    who = " with ".join(reg.describe(k, n) for k, n in components)
    try:
        arr = np.asarray(value)
    except Exception as e:  # noqa: BLE001 - anything a plugin returns
        raise PtyroTypeError(f"{who} returned {type(value).__name__} for {what}; expected an array ({e})") from None
    if arr.dtype.kind not in "fciu":
        raise PtyroTypeError(f"{who} returned {what} of dtype {arr.dtype}; expected numbers")
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise PtyroValueError(f"{who} returned {bad} NaN/inf values of {arr.size} in {what}; expected finite values (a fault of that component)")
    return arr

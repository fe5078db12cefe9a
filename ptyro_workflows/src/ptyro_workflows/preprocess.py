"""Preprocessing of experimental 4D-STEM data: from raw detector counts to the centred,
calibrated :class:`~ptyro_core.Dataset4D` the reconstructions expect.

The steps (each switchable in the ``[preprocess]`` table; the numbers found are printed in one
summary, written to the provenance and drawn in ``preprocess.png``):

1. dark subtraction, gain, a detector mask (optional ``.npy`` files);
2. hot and dead pixels found from the mean pattern and repaired (:func:`ptyro_invert.calibrate.find_bad_pixels`);
3. the bright-field disc's centre and radius from the mean pattern, checked against the given
   semi-angle (a warning when they disagree by more than 5 %);
4. per-pattern centre of mass, a descan fit (``plane``: linear in the scan; ``free``: every
   pattern on its own centre; ``constant``; ``none``) and sub-pixel re-centring;
5. the scan rotation and transpose from the curl of the DPC field (centres of mass minus the
   descan plane), applied to the positions;
6. optional cropping and binning of the detector;
7. a defocus (and astigmatism) estimate from the bright-field parallax shifts, when the
   direct-methods module provides it.

Memory is bounded: patterns are read in chunks of scan rows (a lazy dataset is never loaded
whole), so preprocessing reads the data three times (mean, centres of mass, output).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ptyro_core import Dataset4D, Grid, PtyroTypeError, PtyroValueError
from ptyro_core.conventions import energy2wavelength

__all__ = [
    "PreprocessReport",
    "preprocess_options",
    "analyse",
    "apply",
    "preprocess",
    "estimate_optics",
    "check_or_prepare",
    "use_found_optics",
    "refine_found",
    "plot_preprocess",
]

_DESCAN = ("plane", "free", "constant", "none")
_FRAME = ("auto", "check", "keep")


def preprocess_options(table: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``[preprocess]`` table checked, defaults filled in (schema in
    :data:`ptyro_workflows.config.SCHEMA`)."""
    from ptyro_workflows.config import SCHEMA

    known = SCHEMA["preprocess"]
    t = dict(table or {})
    for k in t:
        if k not in known:
            import difflib

            close = difflib.get_close_matches(k, list(known), n=1)
            raise PtyroValueError(f"unknown key {k!r} in [preprocess]; known keys: {', '.join(known)}" + (f"; closest match: {close[0]!r}" if close else ""))
    o = {**known, **{k: v for k, v in t.items() if v is not None}}
    if o["preprocess"] not in ("auto", True, False):
        raise PtyroValueError(f'[preprocess] preprocess: expected "auto", true or false, got {o["preprocess"]!r}')
    for k in ("bad_pixels", "recentre"):
        if not isinstance(o[k], bool):
            raise PtyroTypeError(f"[preprocess] {k}: expected true or false, got {o[k]!r}")
    if o["descan"] not in _DESCAN:
        raise PtyroValueError(f"[preprocess] descan: expected one of {', '.join(_DESCAN)}, got {o['descan']!r}")
    if o["scan_frame"] not in _FRAME:
        raise PtyroValueError(f"[preprocess] scan_frame: expected one of {', '.join(_FRAME)}, got {o['scan_frame']!r}")
    if not isinstance(o["estimate_defocus"], bool):
        raise PtyroTypeError(f"[preprocess] estimate_defocus: expected true or false, got {o['estimate_defocus']!r}")
    if not (isinstance(o["bin"], int) and not isinstance(o["bin"], bool) and o["bin"] >= 1):
        raise PtyroValueError(f"[preprocess] bin: expected an integer >= 1, got {o['bin']!r}")
    if o.get("crop") is not None and not (isinstance(o["crop"], int) and o["crop"] >= 4):
        raise PtyroValueError(f"[preprocess] crop: expected a detector size in pixels >= 4, got {o['crop']!r}")
    for k in ("max_curl", "max_offset"):
        if not (isinstance(o[k], (int, float)) and not isinstance(o[k], bool) and o[k] > 0):
            raise PtyroValueError(f"[preprocess] {k}: expected a positive number, got {o[k]!r}")
    for k in ("detector_mask", "dark", "gain"):
        if o.get(k) is not None and not isinstance(o[k], str):
            raise PtyroTypeError(f"[preprocess] {k}: expected a path to a .npy file (Qx, Qy), got {o[k]!r}")
    return o


@dataclass
class PreprocessReport:
    """What preprocessing found (``values``: JSON-able numbers, in the provenance) and the arrays
    its figure draws (``arrays``)."""

    values: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        """The findings as printed lines, one per step."""
        v = self.values
        out = ["preprocessing:"]
        if "hot_pixels" in v:
            out.append(
                f"  bad pixels: {len(v['hot_pixels'])} hot, {len(v['dead_pixels'])} dead, {v.get('masked_pixels', 0)} masked"
                + (f" (hot at {v['hot_pixels'][:6]})" if v["hot_pixels"] else "")
            )
        if "disc_center" in v:
            c, n = v["disc_center"], v["detector_center"]
            line = f"  bright-field disc: centre ({c[0]:.2f}, {c[1]:.2f}) px ({c[0] - n[0]:+.2f}, {c[1] - n[1]:+.2f} from the detector centre), radius {v['disc_radius']:.2f} px"
            if v.get("disc_semiangle") is not None:
                line += f" = {v['disc_semiangle']:.2f} mrad"
                if v.get("semiangle_cutoff") is not None:
                    line += f" (given {v['semiangle_cutoff']:g} mrad)"
            out.append(line)
        if "descan" in v:
            d = v["descan"]
            out.append(
                f"  descan ({d['mode']}): centre at the first position ({d['origin'][0]:.2f}, {d['origin'][1]:.2f}) px, drift per scan step di ({d['per_i'][0]:+.4f}, {d['per_i'][1]:+.4f}), dj ({d['per_j'][0]:+.4f}, {d['per_j'][1]:+.4f}) px; "
                f"spread of the centres {v['com_spread_before']:.3f} px -> {v['com_spread_after']:.3f} px rms after re-centring"
                if v.get("recentred")
                else ""
            )
        if "rotation" in v:
            out.append(
                f"  scan frame: rotation {v['rotation']:.2f} deg, transpose {'yes' if v['transpose'] else 'no'} (relative curl {v['curl']:.3f}; "
                f"{v['curl_given']:.3f} in the frame given, rotation {v['rotation_given']:.2f} deg, transpose {'yes' if v['transpose_given'] else 'no'}) -> {v['frame_action']}"
            )
        if v.get("defocus") is not None:
            line = f"  defocus from parallax: {v['defocus']:.1f} Å"
            if v.get("astigmatism") is not None:
                line += f", astigmatism {v['astigmatism']:.1f} Å at {v['astigmatism_angle']:.1f} deg"
            if v.get("defocus_given") is not None:
                line += f" (given {v['defocus_given']:g} Å)"
            if v.get("parallax_evidence") is not None:
                line += f"; the optics explain the bright-field images {v['parallax_evidence']:.1f}x better than optics picked at random"
            out.append(line)
        elif v.get("defocus_note"):
            out.append(f"  defocus: {v['defocus_note']}")
        if "detector" in v:
            out.append(f"  detector: {v['detector']}")
        if "seconds" in v:
            out.append(f"  time: {v['seconds']:.2f} s")
        out += [f"  warning: {w}" for w in self.warnings]
        return [line for line in out if line]


# --------------------------------------------------------------------------- reading in chunks


def _rows(dataset: Dataset4D, chunk: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """(first row, last row + 1, patterns (rows, Ry, Qx, Qy) float32) over the scan."""
    rx, ry = dataset.scan_shape
    step = max(1, int(chunk) // max(ry, 1))
    for i0 in range(0, rx, step):
        i1 = min(rx, i0 + step)
        yield i0, i1, np.asarray(dataset.array[i0:i1], dtype=np.float32)


def _load_map(path: str | None, shape: tuple[int, int], what: str) -> np.ndarray | None:
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        raise PtyroValueError(f"[preprocess] {what}: file {str(p)!r} not found; expected a .npy array of shape {shape}")
    a = np.load(p, allow_pickle=False)
    if a.shape != shape:
        raise PtyroValueError(f"[preprocess] {what}: {str(p)!r} has shape {a.shape}; expected the detector's {shape}")
    return np.asarray(a, np.float32)


def _corrector(opts: Mapping[str, Any], shape: tuple[int, int]) -> tuple[Any, np.ndarray | None]:
    """dark/gain correction of raw patterns, and the user's mask (True = bad)."""
    dark = _load_map(opts.get("dark"), shape, "dark")
    gain = _load_map(opts.get("gain"), shape, "gain")
    mask = _load_map(opts.get("detector_mask"), shape, "detector_mask")

    def correct(p: np.ndarray) -> np.ndarray:
        if dark is not None:
            p = np.maximum(p - dark, 0.0)
        if gain is not None:
            p = p * gain
        return p

    return correct, (None if mask is None else ~(mask.astype(bool)))


# --------------------------------------------------------------------------- analysis


def _frame_of(positions: np.ndarray, scan_shape: tuple[int, int]) -> tuple[tuple[float, float], float, bool]:
    """(step, rotation in degrees, transpose) of a raster of positions, in the convention of
    :func:`ptyro_invert.calibrate.raster_positions`."""
    rx, ry = scan_shape
    pos = positions.reshape(rx, ry, 2)
    u = pos[1, 0] - pos[0, 0] if rx > 1 else np.array([1.0, 0.0])
    v = pos[0, 1] - pos[0, 0] if ry > 1 else np.array([-u[1], u[0]])
    su, sv = float(np.hypot(*u)), float(np.hypot(*v))
    transpose = bool(u[0] * v[1] - u[1] * v[0] < 0)
    along_x = v if transpose else u  # the direction of the raster's x axis
    rot = math.degrees(math.atan2(along_x[1], along_x[0])) % 360.0
    step = (sv, su) if transpose else (su, sv)
    return step, rot, transpose


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def _repaired_com(patterns: Any, bad: Any) -> Any:
    """Centres of mass of ``patterns`` with their ``bad`` pixels repaired."""
    from ptyro_invert import calibrate as cal

    return cal.center_of_mass(cal.repair_pixels(patterns, bad))


@functools.cache
def _jitted_com() -> Any:
    """:func:`_repaired_com` jitted, once per process: a top-level function of ours, so that a
    warm start loads its program from the executable cache without tracing it (a lambda made
    per call was traced again by every run)."""
    import jax

    return jax.jit(_repaired_com)


@dataclass
class _Plan:
    bad: np.ndarray | None
    correct: Any
    centers: np.ndarray | None  # (Rx, Ry, 2) px: where each pattern's centre is now
    positions: np.ndarray
    crop: int | None
    bin: int


# long: the two chunked passes over the patterns (mean pattern, bad pixels, disc; then centres of mass, descan, scan frame, crop) in the order they run, sharing their sums
def analyse(
    dataset: Dataset4D,
    options: Mapping[str, Any] | None = None,
    *,
    semiangle_cutoff: float | None = None,
    defocus: float | None = None,
    apply_corrections: bool = True,
    chunk: int = 512,
) -> tuple[PreprocessReport, _Plan]:
    """Find what preprocessing needs (two chunked passes over the patterns). With
    ``apply_corrections=False`` nothing is planned but the checks (for data already prepared)."""
    from ptyro_invert import calibrate as cal

    t0 = time.perf_counter()
    opts = preprocess_options(options)
    rep = PreprocessReport()
    v = rep.values
    rx, ry = dataset.scan_shape
    nx, ny = dataset.grid.gpts
    correct, user_bad = _corrector(opts, (nx, ny))
    # pass 1: the mean pattern
    total = np.zeros((nx, ny), np.float64)
    for _, _, p in _rows(dataset, chunk):
        total += correct(p).sum(axis=(0, 1), dtype=np.float64)
    mean = total / (rx * ry)
    first = np.asarray(dataset.array[0, 0])
    counts = bool(np.issubdtype(first.dtype, np.integer) or np.all(first == np.round(first)))  # counted electrons
    bad = None
    if opts["bad_pixels"]:
        hot, dead = cal.find_bad_pixels(mean, n_frames=rx * ry if counts else 1)
        bad = hot | dead
        v["hot_pixels"] = [tuple(int(i) for i in ij) for ij in zip(*np.nonzero(hot))]
        v["dead_pixels"] = [tuple(int(i) for i in ij) for ij in zip(*np.nonzero(dead))]
    if user_bad is not None:
        bad = user_bad if bad is None else (bad | user_bad)
        v["masked_pixels"] = int(user_bad.sum())
    if bad is not None and bad.any():
        mean = np.asarray(cal.repair_pixels(mean, bad), np.float64)
    # the bright-field disc
    disc = cal.bright_field_disc(mean)
    v["detector_center"] = [nx // 2, ny // 2]
    v["disc_center"] = [round(disc.center[0], 4), round(disc.center[1], 4)]
    v["disc_radius"] = round(disc.radius, 4)
    lam = energy2wavelength(dataset.energy)
    dq = dataset.grid.reciprocal_sampling
    v["disc_semiangle"] = round(disc.radius * math.sqrt(dq[0] * dq[1]) * lam * 1e3, 3)
    if semiangle_cutoff is not None:
        v["semiangle_cutoff"] = float(semiangle_cutoff)
        if abs(v["disc_semiangle"] / semiangle_cutoff - 1) > 0.05:
            rep.warnings.append(
                f"the bright-field disc's radius is {v['disc_semiangle']:.2f} mrad with the detector calibration given "
                f"({dq[0]:.5g} Å⁻¹ per pixel), but the semi-angle given is {semiangle_cutoff:g} mrad: one of them is off by "
                f"{100 * abs(v['disc_semiangle'] / semiangle_cutoff - 1):.0f} %"
            )
    rep.arrays["mean_pattern"] = mean
    rep.arrays["disc"] = disc
    # pass 2: centres of mass of the repaired patterns
    com_fn = _jitted_com()
    bmask = np.zeros((nx, ny), bool) if bad is None else bad
    com = np.zeros((rx, ry, 2))
    for i0, i1, p in _rows(dataset, chunk):
        com[i0:i1] = np.asarray(com_fn(correct(p), bmask))
    rep.arrays["com"] = com
    plane = cal.fit_descan(com, "plane")
    ii = np.arange(rx)
    v["descan"] = {
        "mode": opts["descan"],
        "origin": [float(plane[0, 0, 0]), float(plane[0, 0, 1])],
        "per_i": [float(plane[1, 0, 0] - plane[0, 0, 0]) if rx > 1 else 0.0, float(plane[1, 0, 1] - plane[0, 0, 1]) if rx > 1 else 0.0],
        "per_j": [float(plane[0, 1, 0] - plane[0, 0, 0]) if ry > 1 else 0.0, float(plane[0, 1, 1] - plane[0, 0, 1]) if ry > 1 else 0.0],
    }
    del ii
    centre = np.array([nx // 2, ny // 2], np.float64)
    v["com_mean_offset"] = [float(x) for x in com.reshape(-1, 2).mean(0) - centre]
    v["com_spread_before"] = float(np.sqrt(np.mean(np.sum((com - centre) ** 2, -1))))
    centers = None
    if apply_corrections and opts["recentre"] and opts["descan"] != "none":
        centers = cal.fit_descan(com, opts["descan"])
        after = com - centers
        v["com_spread_after"] = float(np.sqrt(np.mean(np.sum(after**2, -1))))
        v["recentred"] = True
        rep.arrays["com_after"] = after + centre
    # the scan frame from the DPC field
    positions = np.asarray(dataset.positions, np.float64)
    step, rot0, tr0 = _frame_of(positions, (rx, ry))
    new_positions = positions
    dpc = com - plane
    if min(rx, ry) >= 4 and opts["scan_frame"] != "keep":
        try:
            fit = cal.scan_rotation(dpc, step=step)
        except PtyroValueError as e:
            rep.warnings.append(f"scan frame not determined: {e}")
            fit = None
        if fit is not None:
            rep.arrays["rotation_fit"] = fit
            given = cal.dpc_curl(dpc, rot0, tr0, step=step)
            v.update(
                rotation=round(fit.rotation, 3),
                transpose=fit.transpose,
                curl=round(fit.curl, 4),
                curl_given=round(given, 4),
                rotation_given=round(rot0, 3),
                transpose_given=tr0,
            )
            same = fit.transpose == tr0 and _angle_diff(fit.rotation, rot0) < 1.0
            wrong = not same and fit.curl < opts["max_curl"] and given > max(2.0 * fit.curl, fit.curl + 0.05)
            if same:
                v["frame_action"] = "the frame given is right"
            elif fit.curl >= opts["max_curl"]:
                v["frame_action"] = f"kept the frame given (no frame has a clearly small curl: {fit.curl:.2f} >= max_curl {opts['max_curl']})"
            elif opts["scan_frame"] == "auto" and apply_corrections:
                v["frame_action"] = "positions rotated" + (" and transposed" if fit.transpose != tr0 else "")
                c = positions.mean(axis=0)
                new_positions = cal.raster_positions((rx, ry), step, fit.rotation, fit.transpose) - np.array(cal.raster_positions((rx, ry), step).mean(0)) + c
            elif wrong:
                raise PtyroValueError(
                    f"the scan frame looks wrong: relative DPC curl {given:.2f} with rotation {rot0:.1f} deg"
                    f"{' transposed' if tr0 else ''}, {fit.curl:.2f} with rotation {fit.rotation:.1f} deg{' transposed' if fit.transpose else ''}; "
                    f"enable preprocessing (--preprocess true), or set [scan] rotation = {fit.rotation % 180.0:.1f} or {fit.rotation % 180.0 + 180.0:.1f} "
                    f"(the curl cannot tell them apart){' and transpose the scan' if fit.transpose != tr0 else ''}"
                )
            else:
                v["frame_action"] = "kept the frame given (the difference is not clear)"
    crop = opts.get("crop")
    b = int(opts["bin"])
    if apply_corrections and (crop or b > 1):
        n_out = (crop or min(nx, ny)) // b
        v["detector"] = f"{nx}x{ny} px -> {n_out}x{n_out} px (crop {crop or 'none'}, bin {b})"
    v["seconds_analysis"] = round(time.perf_counter() - t0, 3)
    plan = _Plan(
        bad=bad if (bad is not None and bad.any()) else None,
        correct=correct,
        centers=centers,
        positions=new_positions,
        crop=crop if apply_corrections else None,
        bin=b if apply_corrections else 1,
    )
    return rep, plan


#: the least ``AberrationFit.evidence`` (the fitted optics' exact-transfer objective over that of
#: optics picked at random) for a fit whose shifts do not follow it (aliased) to be used: about 1.4
#: on noise alone, 6.8 and more on the cases of benchmarks/direct (measured)
MIN_EVIDENCE = 4.0


def estimate_optics(dataset: Dataset4D, report: PreprocessReport, *, defocus: float | None = None, max_disagreement: float = 5.0) -> Dataset4D:
    """Defocus and two-fold astigmatism from the bright-field parallax shifts
    (:func:`ptyro_invert.direct.parallax.fit_aberrations`, on the centred ``dataset``), which
    also refines the scan rotation the curl found and settles its 180° ambiguity: θ and
    θ + 180° with the aberrations negated fit the shifts alike, and the sign of the nominal
    ``defocus`` (what the user set on the microscope) picks one. Returns the dataset with its
    positions in the refined frame; the findings go into ``report``."""
    v = report.values
    try:
        from ptyro_invert.direct.parallax import fit_aberrations
    except ImportError:
        v["defocus_note"] = "not estimated (the parallax fit of ptyro_invert.direct is not installed); the nominal defocus is used"
        return dataset
    from ptyro_invert import calibrate as cal

    if defocus is not None:
        v["defocus_given"] = float(defocus)
    step, rot0, tr = _frame_of(np.asarray(dataset.positions, np.float64), dataset.scan_shape)
    try:
        fit = fit_aberrations(dataset, orders=("C10", "C12"))
    except (PtyroValueError, ValueError, np.linalg.LinAlgError) as e:
        v["defocus_note"] = f"not estimated ({' '.join(str(e).split())})"
        return dataset
    measured = float(np.sqrt(np.mean(np.sum(np.asarray(fit.shifts) ** 2, axis=1))))
    # the shifts' residual, or where they are aliased (a crystal's, once they pass half its
    # lattice period: the fit then comes from the search of fit_aberrations) the fit's evidence
    if not (fit.rms < 0.25 * measured or fit.evidence >= MIN_EVIDENCE):
        v["defocus_note"] = (
            f"not estimated: the parallax shifts do not fit defocus and astigmatism (rms residual {fit.rms:.3f} Å of {measured:.3f} Å) "
            f"and the optics explain the bright-field images {fit.evidence:.1f}x better than optics picked at random (at least {MIN_EVIDENCE:g} wanted); the nominal defocus is used"
        )
        return dataset
    ab = dict(fit.aberrations)
    rel = float(fit.rotation)
    flip = defocus is not None and defocus != 0 and np.sign(-ab["C10"]) != np.sign(defocus)
    if flip:
        ab["C10"] = -ab["C10"]
        ab["phi12"] = (ab.get("phi12", 0.0) + math.pi / 2) % math.pi
    v["parallax_rotation"] = round(rel + (180.0 if flip else 0.0), 3)
    v["parallax_rms"] = round(float(fit.rms), 4)
    v["parallax_evidence"] = round(float(fit.evidence), 2) if math.isfinite(fit.evidence) else None
    v["defocus"] = round(-ab["C10"], 2)
    v["astigmatism"] = round(float(ab.get("C12", 0.0)), 2)
    v["astigmatism_angle"] = round(math.degrees(ab.get("phi12", 0.0)), 2)
    v["aberrations"] = {"C10": -v["defocus"], "C12": v["astigmatism"], "phi12": v["astigmatism_angle"]}
    report.arrays["parallax_fit"] = fit
    if abs(rel) > max_disagreement:
        report.warnings.append(f"the parallax shifts put the scan {rel:+.1f} deg from the frame the curl found; the curl's frame is kept")
        rel = 0.0
    if rel == 0.0 and not flip:
        return dataset
    rot = (rot0 + rel + (180.0 if flip else 0.0)) % 360.0
    c = np.asarray(dataset.positions, np.float64).mean(axis=0)
    pos = cal.raster_positions(dataset.scan_shape, step, rot, tr)
    pos = pos - pos.mean(axis=0) + c
    if "rotation" in v:
        v["rotation_curl"] = v["rotation"]
        v["rotation"] = round(rot, 3)
        v["frame_action"] = (
            v.get("frame_action", "") + f"; refined by the parallax fit ({rel:+.2f} deg" + (", 180° from the curl's choice" if flip else "") + ")"
        ).lstrip("; ")
    return Dataset4D(dataset.array, pos.astype(np.float32), grid=dataset.grid, energy=dataset.energy)


# --------------------------------------------------------------------------- applying


def _output_grid(grid: Grid, crop: int | None, b: int) -> Grid:
    nx, ny = grid.gpts
    dq = grid.reciprocal_sampling
    ox, oy = (crop, crop) if crop else (nx, ny)
    ox, oy = ox // b, oy // b
    return Grid((ox, oy), (1.0 / (ox * dq[0] * b), 1.0 / (oy * dq[1] * b)))


def _crop_bin(p: np.ndarray, crop: int | None, b: int) -> np.ndarray:
    nx, ny = p.shape[-2:]
    if crop:
        if crop > min(nx, ny):
            raise PtyroValueError(f"[preprocess] crop: {crop} px is larger than the detector ({nx}x{ny} px)")
        x0, y0 = nx // 2 - crop // 2, ny // 2 - crop // 2
        p = p[..., x0 : x0 + crop, y0 : y0 + crop]
    if b > 1:
        sx, sy = p.shape[-2] // b * b, p.shape[-1] // b * b
        # keep the centre pixel's block centred: trim symmetrically
        tx, ty = (p.shape[-2] - sx) // 2, (p.shape[-1] - sy) // 2
        p = p[..., tx : tx + sx, ty : ty + sy]
        p = p.reshape(*p.shape[:-2], sx // b, b, sy // b, b).sum(axis=(-3, -1))
    return p


def _transform(plan: _Plan) -> Any:
    import jax

    from ptyro_invert import calibrate as cal

    bad = plan.bad

    @jax.jit
    def fix(p: Any, centres: Any) -> Any:
        if bad is not None:
            p = cal.repair_pixels(p, bad)
        return cal.recentre(p, centres)

    @jax.jit
    def fix_only(p: Any) -> Any:
        return cal.repair_pixels(p, bad) if bad is not None else p

    return fix, fix_only


def apply(dataset: Dataset4D, plan: _Plan, *, writer: Any = None, chunk: int = 512) -> Dataset4D | None:
    """The preprocessed dataset (in memory), or, with ``writer`` (a
    :class:`~ptyro_workflows.io.DatasetWriter` made for :func:`output_geometry`), the patterns
    written chunk by chunk and None returned."""
    rx, ry = dataset.scan_shape
    grid = _output_grid(dataset.grid, plan.crop, plan.bin)
    fix, fix_only = _transform(plan)
    out = None if writer is not None else np.empty((rx, ry, *grid.gpts), np.float32)
    for i0, i1, p in _rows(dataset, chunk):
        p = plan.correct(p)
        q = np.asarray(fix(p, plan.centers[i0:i1]) if plan.centers is not None else fix_only(p))
        q = _crop_bin(q, plan.crop, plan.bin)
        if out is None:
            writer.write(i0 * ry, i1 * ry, q.reshape(-1, *grid.gpts))
        else:
            out[i0:i1] = q
    if out is None:
        return None
    return Dataset4D(out, plan.positions.astype(np.float32), grid=grid, energy=dataset.energy)


def output_geometry(dataset: Dataset4D, plan: _Plan) -> tuple[Grid, np.ndarray]:
    """(grid, positions) of the preprocessed dataset."""
    return _output_grid(dataset.grid, plan.crop, plan.bin), plan.positions


def preprocess(
    dataset: Dataset4D,
    options: Mapping[str, Any] | None = None,
    *,
    semiangle_cutoff: float | None = None,
    defocus: float | None = None,
    chunk: int = 512,
) -> tuple[Dataset4D, PreprocessReport]:
    """Preprocess ``dataset`` as ``options`` (a ``[preprocess]`` table) says: the corrected
    dataset in memory and the report of what was found."""
    t0 = time.perf_counter()
    rep, plan = analyse(dataset, options, semiangle_cutoff=semiangle_cutoff, defocus=defocus, chunk=chunk)
    out = apply(dataset, plan, chunk=chunk)
    assert out is not None  # no writer: in memory
    if preprocess_options(options)["estimate_defocus"] and min(out.scan_shape) >= 8:
        out = estimate_optics(out, rep, defocus=defocus)
    rep.values["seconds"] = round(time.perf_counter() - t0, 3)
    return out, rep


def use_found_optics(probe: dict[str, Any], report: PreprocessReport | None) -> str | None:
    """Put the defocus and astigmatism the parallax fit found into a ``[probe]`` table (in
    place; aliases replaced by C10, C12, phi12 in degrees). Returns a line saying so, or None."""
    ab = None if report is None else report.values.get("aberrations")
    if not ab:
        return None
    for k in ("defocus", "astigmatism", "astigmatism_angle", "C10", "C12", "phi12"):
        probe.pop(k, None)
    probe.update(C10=float(ab["C10"]), C12=float(ab["C12"]), phi12=float(ab["phi12"]))
    return f"  probe for the reconstruction: C10 {ab['C10']:g} Å, C12 {ab['C12']:g} Å, phi12 {ab['phi12']:g} deg (from the parallax fit)"


def refine_found(reconstruction: dict[str, Any], report: PreprocessReport | None, options: Mapping[str, Any] | None) -> str | None:
    """After preprocessing, let the reconstruction refine what the preprocessing estimated (in
    place on a ``[reconstruction]`` table, unless ``[preprocess] refine = false``): the scan
    rotation the curl and parallax found (``single_slice`` becomes ``position_corrected``: per-
    position corrections and the scan's rotation, its scale held at the calibrated step), the
    defocus and astigmatism the parallax fit found (``fit_aberrations``: C10, C12/φ12, C30), and
    the object's phase ramp, which patterns centred on their centres of mass leave undetermined
    (``remove_phase_ramp = "plane"``). Returns a line saying so, or None."""
    if report is None or not preprocess_options(options)["refine"]:
        return None
    done = []
    if reconstruction.get("algorithm", "single_slice") == "single_slice" and "rotation" in report.values:
        reconstruction["algorithm"] = "position_corrected"
        done.append("scan rotation and positions (position_corrected, scale held)")
    if "aberrations" in report.values and not reconstruction.get("fit_aberrations"):
        reconstruction["fit_aberrations"] = True
        done.append("C10, C12/phi12, C30 (fit_aberrations)")
    extra = dict(reconstruction.get("options") or {})
    if report.values.get("recentred") and "remove_phase_ramp" not in extra:
        reconstruction["options"] = {**extra, "remove_phase_ramp": "plane"}
        done.append("no object phase ramp (remove_phase_ramp = plane)")
    if not done:
        return None
    report.values["refined_by_reconstruction"] = done
    return "  the reconstruction refines: " + "; ".join(done) + " ([preprocess] refine = false to keep them)"


def check_or_prepare(
    dataset: Dataset4D, options: Mapping[str, Any] | None, *, elsewhere: bool, semiangle_cutoff: float | None = None, defocus: float | None = None
) -> tuple[Dataset4D, PreprocessReport | None]:
    """What :func:`ptyro_workflows.reconstruct.reconstruct` runs first: with ``[preprocess]
    preprocess = true`` (or ``"auto"`` for data from elsewhere) the whole preprocessing; else
    the checks only, which refuse a dataset whose bright-field disc is off centre by more than
    ``max_offset`` px or whose scan frame is clearly wrong (one error line saying what to set)."""
    opts = preprocess_options(options)
    on = opts["preprocess"] is True or (opts["preprocess"] == "auto" and elsewhere)
    if on:
        try:
            return preprocess(dataset, opts, semiangle_cutoff=semiangle_cutoff, defocus=defocus)
        except PtyroValueError as e:
            if opts["preprocess"] is True or "bright-field disc" not in str(e):
                raise
            return dataset, None  # "auto" and no bright-field disc: nothing to centre on
    if min(dataset.scan_shape) < 2 or opts["preprocess"] is False and opts["scan_frame"] == "keep" and opts["max_offset"] >= 1e9:
        return dataset, None
    try:
        rep, _ = analyse(dataset, {**opts, "scan_frame": "check" if opts["scan_frame"] != "keep" else "keep"}, apply_corrections=False)
    except PtyroValueError as e:
        if "scan frame" in str(e) or "bright-field disc" not in str(e):
            raise
        return dataset, None  # no bright-field disc to check (e.g. dark-field-only patterns): nothing to say
    off = np.hypot(*rep.values["com_mean_offset"])
    if off > opts["max_offset"]:
        c = rep.values["com_mean_offset"]
        raise PtyroValueError(
            f"the patterns are not centred: their mean centre of mass is ({c[0]:+.2f}, {c[1]:+.2f}) px from the detector centre "
            f"(more than max_offset {opts['max_offset']} px); run 'ptyro preprocess' or reconstruct with --preprocess true"
        )
    return dataset, None


# --------------------------------------------------------------------------- the figure


def plot_preprocess(path: str | Path, report: PreprocessReport) -> Path:
    """One page, ``preprocess.png``: :func:`ptyro_workflows.figures.plot_preprocess`."""
    from ptyro_workflows.figures import plot_preprocess as plot

    return plot(path, report.values, report.arrays, report.summary())

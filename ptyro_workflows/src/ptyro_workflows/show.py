"""``ptyro show FILE [-o DIR]``: look at a dataset or a reconstruction without writing code.

A dataset (ours, or any EMD 1.0 4D-STEM file with calibrations): the mean pattern with the
detector annuli, the aperture and the band limit; virtual images computed from the 4D data
(BF, ABF, ADF, HAADF as far as the patterns reach, and iDPC from the centre of mass); CBED
patterns on and between atomic columns (the brightest and darkest (HA)ADF positions, or chosen
scan indices); the projected potential when the file holds the ground truth.

A reconstruction: phase and amplitude of every object slice, the probe in real and reciprocal
space, the loss; with the ground truth in its input dataset, the reconstructed phase beside the
truth σ·ΣV band-limited to what the probe transfers (spatial frequencies up to 2α/λ), on one
colour scale, and the correlation.

Everything here reads the file with h5py and computes with numpy, pattern row by pattern row
(memory bounded by one scan row), and imports no JAX.
"""

import math
import tomllib
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ptyro_core import PtyroValueError
from ptyro_core.conventions import energy2wavelength

__all__ = [
    "show_file",
    "dataset_figures",
    "reconstruction_figures",
    "figure_layouts",
    "virtual_images",
    "idpc",
    "transfer_limited",
    "display_inline",
    "run_show",
]

DATASET_FIGURES = ("potential.png", "mean_diffraction.png", "virtual_images.png", "cbed.png")
RECONSTRUCTION_FIGURES = ("phase.png", "object.png", "probe.png", "loss.png")


# --------------------------------------------------------------------------- computations


def default_detectors(semiangle: float, band_limit: float) -> dict[str, list[float]]:
    """BF [0, α/2], ABF [α/2, α], ADF [1.25α, 3α] and HAADF [3α, band limit] (each only as far
    as the patterns reach)."""
    a = float(semiangle)
    out = {"bf": [0.0, a / 2], "abf": [a / 2, a]}
    if band_limit > 1.5 * a:
        out["adf"] = [1.25 * a, min(3 * a, band_limit)]
    if band_limit > 3.5 * a:
        out["haadf"] = [3 * a, band_limit]
    return out


def virtual_images(
    rows: Any, mrad_grid: np.ndarray, detectors: Mapping[str, Sequence[float]], k_grid: tuple[np.ndarray, np.ndarray]
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Stream the 4D data row by row (``rows`` yields (Ry, Qx, Qy) arrays): returns the annular
    detector images {name: (Rx, Ry)} as fractions of each pattern's total, the centre of mass
    (Rx, Ry, 2) in Å⁻¹, and the mean pattern."""
    masks = {n: (mrad_grid >= r[0]) & (mrad_grid < r[1]) for n, r in detectors.items()}
    imgs: dict[str, list[np.ndarray]] = {n: [] for n in masks}
    com: list[np.ndarray] = []
    total_mean, count = np.zeros(np.shape(mrad_grid)), 0
    kx, ky = k_grid
    for row in rows:
        r = np.asarray(row, np.float64)
        tot = r.sum(axis=(1, 2))
        safe = np.where(tot > 0, tot, 1.0)
        for n, m in masks.items():
            imgs[n].append(r[:, m].sum(axis=1) / safe)
        com.append(np.stack([(r * kx).sum(axis=(1, 2)) / safe, (r * ky).sum(axis=(1, 2)) / safe], -1))
        total_mean = total_mean + r.sum(axis=0)
        count += r.shape[0]
    return {n: np.stack(v) for n, v in imgs.items()}, np.stack(com), total_mean / max(count, 1), np.asarray(count)


def idpc(com: np.ndarray, step: Sequence[float]) -> np.ndarray:
    """Integrated DPC: the phase φ (rad) whose gradient is 2π × the centre of mass (Å⁻¹) of the
    patterns, ∇φ = 2π·COM, integrated in Fourier space over the scan (periodic), mean zero."""
    rx, ry = com.shape[:2]
    qx = np.fft.fftfreq(rx, step[0])[:, None]
    qy = np.fft.fftfreq(ry, step[1])[None, :]
    q2 = qx**2 + qy**2
    q2[0, 0] = 1.0
    fx, fy = np.fft.fft2(com[..., 0]), np.fft.fft2(com[..., 1])
    phi = -1j * (qx * fx + qy * fy) / q2
    phi[0, 0] = 0.0
    return np.real(np.fft.ifft2(phi))


def transfer_limited(image: np.ndarray, sampling: Sequence[float], k_max: float) -> np.ndarray:
    """``image`` (periodic) with spatial frequencies above ``k_max`` (Å⁻¹) removed."""
    kx = np.fft.fftfreq(image.shape[0], sampling[0])[:, None]
    ky = np.fft.fftfreq(image.shape[1], sampling[1])[None, :]
    return np.real(np.fft.ifft2(np.fft.fft2(image) * (kx**2 + ky**2 <= k_max**2)))


# --------------------------------------------------------------------------- reading


def _config(prov: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return tomllib.loads(str(prov.get("config") or ""))
    except tomllib.TOMLDecodeError:
        return {}


def _check_out(out: Path, names: Sequence[str], overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise PtyroValueError(f"-o {str(out)!r} is a file; expected a directory")
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise PtyroValueError(f"{str(out)!r} already holds {', '.join(existing)}; pass --overwrite to replace them")


def dataset_figures(path: str | Path, out: str | Path, *, positions: Sequence[Sequence[int]] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Draw a dataset's figures into ``out``; returns {"files": [...], "lines": [...]}."""
    from ptyro_workflows import figures
    from ptyro_workflows.config import annular_detectors
    from ptyro_workflows.io import _find_4d, _open_h5, _read_metadata, _units, read_file_provenance

    out = Path(out)
    _check_out(out, DATASET_FIGURES, overwrite)
    prov = read_file_provenance(path)
    cfg = _config(prov)
    with _open_h5(path) as f:
        node = _find_4d(f)
        if node is None or not isinstance(node, h5py.Group):
            raise PtyroValueError(f"{str(path)!r} holds no calibrated EMD 4D array; expected a 4D-STEM dataset (ptyro info tells what it holds)")
        data = node["data"]
        meta = _read_metadata(node)
        rx, ry, qx, qy = data.shape
        dims = [np.asarray(node[f"dim{i}"][()], np.float64).ravel() for i in range(4)]
        units = [_units(node[f"dim{i}"]).lower() for i in range(4)]
        energy = float(meta.get("energy") or (cfg.get("probe") or {}).get("energy") or 0)
        if not energy:
            raise PtyroValueError(f"{str(path)!r}: the beam energy is not in the file; expected a calibrated dataset")
        lam = energy2wavelength(energy)
        dq = [float(d[1] - d[0]) for d in dims[2:]]
        if units[2] == "mrad":
            dq = [v * 1e-3 / lam for v in dq]
        elif units[2] in ("nm^-1", "1/nm"):
            dq = [v / 10 for v in dq]
        step = [float(d[1] - d[0]) if u in ("a", "å") else 10 * float(d[1] - d[0]) for d, u in zip(dims[:2], units[:2])]
        origin = [float(d[0]) if u in ("a", "å") else 10 * float(d[0]) for d, u in zip(dims[:2], units[:2])]
        kx = (np.arange(qx) - qx // 2)[:, None] * dq[0]
        ky = (np.arange(qy) - qy // 2)[None, :] * dq[1]
        mrad = np.sqrt(kx**2 + ky**2) * lam * 1e3
        mrad_px = (dq[0] * lam * 1e3, dq[1] * lam * 1e3)
        ours = prov.get("kind") == "simulation"
        edge = min(qx // 2 * mrad_px[0], qy // 2 * mrad_px[1])
        band = edge * 2 / 3 if ours else None
        alpha = (cfg.get("probe") or {}).get("semiangle_cutoff")
        if alpha is None:  # from the bright-field disk of the first row
            first = np.asarray(data[0], np.float64).mean(axis=0)
            alpha = math.sqrt(np.sum(first > 0.5 * first.max()) / math.pi) * mrad_px[0]
        dets = annular_detectors(cfg.get("detectors") or {}) or default_detectors(float(alpha), band or edge)
        images, com, mean, _ = virtual_images((data[i] for i in range(rx)), mrad, dets, (kx * np.ones_like(ky), ky * np.ones_like(kx)))
        phase = idpc(com, step)
        # CBED on and between the columns: the brightest and darkest of the highest-angle image
        dark_field = images[max(dets, key=lambda n: dets[n][0])]
        if positions:
            chosen = {f"[{int(p[0])}, {int(p[1])}]": (int(p[0]), int(p[1])) for p in positions}
            for name, (i, j) in chosen.items():
                if not (0 <= i < rx and 0 <= j < ry):
                    raise PtyroValueError(f"--position {name}: expected a scan index within [0, {rx - 1}] x [0, {ry - 1}]")
        else:
            on = np.unravel_index(int(np.argmax(dark_field)), dark_field.shape)
            off = np.unravel_index(int(np.argmin(dark_field)), dark_field.shape)
            chosen = {"on a column": (int(on[0]), int(on[1])), "between columns": (int(off[0]), int(off[1]))}
        cbed = {
            f"CBED {name} ({origin[0] + i * step[0]:.2f}, {origin[1] + j * step[1]:.2f}) Å": np.asarray(data[i, j], np.float64)
            for name, (i, j) in chosen.items()
        }
        projected = None
        root = node.parent
        if "projected_potential" in root:
            pp = root["projected_potential"]
            projected = (
                np.asarray(pp["data"][()], np.float64),
                float(np.ravel(pp["dim0"][()])[1] - np.ravel(pp["dim0"][()])[0]),
                float(np.ravel(pp["dim1"][()])[1] - np.ravel(pp["dim1"][()])[0]),
            )
    out.mkdir(parents=True, exist_ok=True)
    files = []
    if projected is not None:
        box = ((origin[0], origin[1]), (origin[0] + rx * step[0], origin[1] + ry * step[1]))
        figures.plot_projected_potential(
            out / "potential.png", projected[0], (projected[1], projected[2]), scan_box=box, title="Projected potential ΣV (ground truth)"
        )
        files.append(out / "potential.png")
    figures.plot_mean_diffraction(out / "mean_diffraction.png", mean, mrad_px, semiangle_cutoff=float(alpha), detectors=dets, band_limit=band)
    panels = {f"{n.upper()} {r[0]:g}–{r[1]:g} mrad": (img, "fraction of beam", "gray") for n, r in dets.items() for img in [images[n]]}
    panels["iDPC (∫ 2π·COM)"] = (phase, "rad", "magma")
    marks = {name.split(" (")[0].removeprefix("CBED "): (origin[0] + i * step[0], origin[1] + j * step[1]) for name, (i, j) in zip(cbed, chosen.values())}
    figures.plot_images(out / "virtual_images.png", panels, step, origin, marks=marks)
    figures.plot_cbed(out / "cbed.png", cbed, mrad_px, semiangle_cutoff=float(alpha))
    files += [out / "mean_diffraction.png", out / "virtual_images.png", out / "cbed.png"]
    lines = [
        f"{Path(path).name}: {rx} x {ry} scan, step {step[0]:.4g} x {step[1]:.4g} Å; {qx} x {qy} patterns, {mrad_px[0]:.3g} mrad/pixel, {energy / 1e3:g} keV"
    ]
    lines.append(
        "virtual images: " + ", ".join(f"{n} {dets[n][0]:g}–{dets[n][1]:g} mrad (mean {images[n].mean():.3g})" for n in dets) + "; iDPC from the centre of mass"
    )
    return {"files": files, "lines": lines}


def figure_layouts(detectors: int, *, positions: int = 2, slices: int = 1) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The figures :func:`dataset_figures` (``"dataset"``) and :func:`reconstruction_figures`
    (``"reconstruction"``) draw, in their order, as the arguments of
    :func:`ptyro_workflows.figures.prepare` (to make them ahead of their data), for a dataset
    simulated by ptyro (its ground truth and band limit shown, the probe's aperture known) with
    ``detectors`` annular detectors and CBED at ``positions`` scan positions, and a
    reconstruction of ``slices`` object slices compared with its truth."""
    return {
        "dataset": [
            ("potential", {}),
            ("mean_diffraction", {"entries": detectors + 2}),  # the detectors, the aperture and the band limit
            ("images", {"n": detectors + 1, "marks": positions > 0}),  # and the iDPC image
            ("cbed", {"n": positions}),
        ],
        "reconstruction": [
            ("phase", {}),
            ("images", {"n": 2 * slices, "ncols": 2}),  # phase and amplitude of each slice
            ("probe", {}),
            ("loss", {}),
        ],
    }


def _read_reconstruction(path: str | Path) -> Any:
    from ptyro_workflows.io import _open_h5

    with _open_h5(path) as f:
        g = f.get("reconstruction")
        if g is None or "object" not in g:
            raise PtyroValueError(f"{str(path)!r} holds no /reconstruction/object; expected a reconstruction file")
        return types.SimpleNamespace(
            object=np.asarray(g["object"][()]),
            probe=np.asarray(g["probe"][()]),
            positions=np.asarray(g["positions"][()], np.float64),
            loss=np.asarray(g["loss"][()]) if "loss" in g else np.zeros(0),
            sampling=tuple(float(v) for v in g.attrs["sampling"]),
            energy=float(g.attrs["energy"]),
        )


def _truth(path: str | Path) -> tuple[np.ndarray, tuple[float, float], np.ndarray] | None:
    """(projected potential V·Å, its sampling, scan positions Å) of a dataset holding the truth."""
    from ptyro_workflows.io import ROOT, _open_h5

    with _open_h5(path) as f:
        root = f.get(ROOT)
        if root is None or "projected_potential" not in root or "scan_positions" not in root:
            return None
        pp = root["projected_potential"]
        d = [np.ravel(pp[f"dim{i}"][()]) for i in (0, 1)]
        return (
            np.asarray(pp["data"][()], np.float64),
            (float(d[0][1] - d[0][0]), float(d[1][1] - d[1][0])),
            np.asarray(root["scan_positions"]["data"][()], np.float64),
        )


def scanned_area(
    state: Any, scan_positions: np.ndarray, truth: np.ndarray, truth_sampling: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """The reconstructed phase (summed over slices) over the scanned area and the truth on the
    same pixels (the reconstruction's frame matched to the specimen's through the positions)."""
    pos = np.asarray(scan_positions, np.float64)
    offset = np.mean(np.asarray(state.positions, np.float64) - pos, axis=0)
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    d = state.sampling
    i0 = np.round((lo + offset) / d).astype(int)
    i1 = np.round((hi + offset) / d).astype(int) + 1
    rec = np.sum(np.angle(np.asarray(state.object)), axis=0)[i0[0] : i1[0], i0[1] : i1[1]]
    j0 = np.round(lo / np.asarray(truth_sampling)).astype(int)
    tx = np.arange(j0[0], j0[0] + rec.shape[0]) % truth.shape[0]
    ty = np.arange(j0[1], j0[1] + rec.shape[1]) % truth.shape[1]
    return rec, truth[np.ix_(tx, ty)], (float(lo[0]), float(lo[1]))


def reconstruction_figures(
    path: str | Path, out: str | Path, *, truth: str | Path | None = None, overwrite: bool = False, only: Sequence[str] | None = None
) -> dict[str, Any]:
    """Draw a reconstruction's figures into ``out`` (and, with the ground truth, the phase
    comparison; ``only``: just those of RECONSTRUCTION_FIGURES, with their lines, e.g. to draw
    them in two processes); returns {"files", "lines", "correlation", "correlation_unfiltered"}."""
    from ptyro_core.conventions import energy2sigma
    from ptyro_workflows import figures
    from ptyro_workflows.io import read_file_provenance
    from ptyro_workflows.reconstruct import phase_correlation

    out = Path(out)
    names = RECONSTRUCTION_FIGURES if only is None else tuple(only)
    _check_out(out, names, overwrite)
    st = _read_reconstruction(path)
    prov = read_file_provenance(path)
    cfg = _config(prov)
    alpha = float((cfg.get("probe") or {}).get("semiangle_cutoff") or 0) or None
    lam = energy2wavelength(st.energy)
    n_obj = st.object.shape[0]
    out.mkdir(parents=True, exist_ok=True)
    files, lines = [], []
    result: dict[str, Any] = {"correlation": None, "correlation_unfiltered": None}
    source = truth if truth is not None else prov.get("input")
    if source is not None and not Path(str(source)).exists() and (Path(path).parent / Path(str(source)).name).exists():
        source = Path(path).parent / Path(str(source)).name
    found = _truth(source) if source is not None and Path(str(source)).exists() and "phase.png" in names else None
    if truth is not None and found is None and "phase.png" in names:
        raise PtyroValueError(f"--truth {str(truth)!r} holds no projected_potential and scan_positions; expected a dataset simulated by ptyro")
    if found is not None:
        projected, tsamp, spos = found
        sigma = energy2sigma(st.energy)
        raw = sigma * projected
        k_max = 2 * alpha * 1e-3 / lam if alpha else None
        limited = transfer_limited(raw, tsamp, k_max) if k_max else raw
        r_raw = phase_correlation(st, spos, raw, tsamp)
        r_lim = phase_correlation(st, spos, limited, tsamp)
        rec, tru, lo = scanned_area(st, spos, limited, tsamp)
        title = f"Truth σ·ΣV, band-limited to 2α = {2 * alpha:g} mrad" if alpha else "Ground truth σ·ΣV"
        figures.plot_phase_comparison(out / "phase.png", rec, tru, st.sampling, correlation=r_lim, origin=lo, truth_title=title)
        files.append(out / "phase.png")
        result.update(correlation=r_lim, correlation_unfiltered=r_raw)
        lines.append(
            f"quality: phase correlation with the ground truth σ·ΣV over the scanned area: {r_lim:.3f} "
            f"(truth band-limited to the probe's transfer, 2α/λ = {k_max or 0:.3g} Å⁻¹); {r_raw:.3f} against the unfiltered truth"
        )
    panels: dict[str, tuple[Any, ...]] = {}
    for s in range(n_obj):
        tag = f" slice {s + 1}/{n_obj}" if n_obj > 1 else ""
        ph = np.angle(st.object[s])
        # robust colour limits: a single hot pixel at the field's edge must not set the scale
        limits = figures.robust_limits(ph)
        panels[f"Object phase{tag} (scale: 0.5–99.5th pct)"] = (ph, "rad (clipped at 0.5/99.5th percentile)", "magma", limits)
        panels[f"Object amplitude{tag}"] = (np.abs(st.object[s]), "|t|", "gray")
    if "object.png" in names:
        figures.plot_images(out / "object.png", panels, st.sampling, ncols=2)
    mrad_px = tuple(lam * 1e3 / (n * d) for n, d in zip(st.probe.shape[-2:], st.sampling))
    if "probe.png" in names:
        figures.plot_probe(out / "probe.png", st.probe, st.sampling, mrad_per_pixel=mrad_px, semiangle_cutoff=alpha)
    if "loss.png" in names:
        figures.plot_loss(out / "loss.png", st.loss, name=str((cfg.get("reconstruction") or {}).get("loss", "")))
    files += [out / n for n in ("object.png", "probe.png", "loss.png") if n in names]
    if st.loss.size and "loss.png" in names:
        lines.append(
            f"loss {float(st.loss[0]):.3g} -> {float(st.loss[-1]):.3g} over {st.loss.size} iterations; {n_obj} slice(s), {st.probe.shape[0]} probe mode(s)"
        )
    result.update(files=files, lines=lines)
    return result


def show_file(
    path: str | Path,
    out: str | Path | None = None,
    *,
    positions: Sequence[Sequence[int]] | None = None,
    truth: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Draw the figures of one of our files (a dataset or a reconstruction) into ``out``
    (default: ``<file stem>-show`` beside it). Returns {"files": [...], "lines": [...], ...}."""
    p = Path(path)
    if not p.exists():
        raise PtyroValueError(f"file {str(p)!r} not found")
    out = Path(out) if out is not None else p.with_name(p.stem + "-show")
    from ptyro_workflows.io import _open_h5

    with _open_h5(p) as f:
        is_recon = "reconstruction" in f
    if is_recon:
        if positions:
            raise PtyroValueError("--position: CBED positions are for a dataset; FILE is a reconstruction")
        return reconstruction_figures(p, out, truth=truth, overwrite=overwrite)
    return dataset_figures(p, out, positions=positions, overwrite=overwrite)


def display_inline(files: Sequence[Path]) -> None:
    """Show PNG files inline when running in a notebook (IPython kernel); else nothing."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or "IPKernelApp" not in getattr(shell, "config", {}):
        return
    for f in files:
        display(Image(filename=str(f)))


def run_show(args: Any) -> int:
    """The ``ptyro show`` subcommand."""
    positions = []
    for v in args.position or []:
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v)):
            raise PtyroValueError(f"--position {v!r}: expected two scan indices IX,IY")
        positions.append(v)
    res = show_file(args.file, args.out, positions=positions or None, truth=args.truth, overwrite=args.overwrite)
    if not args.quiet:
        for line in res["lines"]:
            print(line)
        print(f"wrote {len(res['files'])} figures into {res['files'][0].parent}/: " + ", ".join(f.name for f in res["files"]))
    return 0

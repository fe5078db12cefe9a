"""PNG figures a microscopist looks at first. The only module that imports matplotlib, and it
uses the Agg canvas directly (no global backend switch).

Orientation: every real-space image is drawn with x to the right and y up (``array.T``,
``origin="lower"``), axes labelled in Å; diffraction patterns in mrad.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "plot_projected_potential",
    "plot_mean_diffraction",
    "plot_virtual_images",
    "plot_phase_comparison",
    "plot_probe",
    "plot_loss",
    "plot_preprocess",
]


def _figure(ncols: int = 1, width: float = 4.6, height: float = 4.0) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    fig.savefig(path)
    return path


def _image(fig: Any, ax: Any, img: np.ndarray, extent: list[float], title: str, cbar: str, *, cmap: str = "viridis", xlabel: str = "x (Å)", ylabel: str = "y (Å)", **kw: Any) -> Any:
    im = ax.imshow(np.asarray(img).T, origin="lower", extent=extent, cmap=cmap, interpolation="nearest", **kw)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, label=cbar, shrink=0.85)
    return im


def _extent(shape: tuple[int, ...], sampling: tuple[float, float], origin: tuple[float, float] = (0.0, 0.0)) -> list[float]:
    return [origin[0], origin[0] + shape[0] * sampling[0], origin[1], origin[1] + shape[1] * sampling[1]]


def plot_projected_potential(path: Path, projected: np.ndarray, sampling: tuple[float, float], *, scan_box: tuple[Any, Any] | None = None, title: str = "Projected potential ΣV") -> Path:
    """ΣV (V·Å) over the cell, with the scanned area outlined."""
    fig, (ax,) = _figure()
    _image(fig, ax, projected, _extent(projected.shape, sampling), title, "V·Å", cmap="magma")
    if scan_box is not None:
        from matplotlib.patches import Rectangle

        (x0, y0), (x1, y1) = scan_box
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="cyan", lw=1.2, label="scanned area"))
        ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def plot_mean_diffraction(path: Path, mean_pattern: np.ndarray, mrad_per_pixel: tuple[float, float], *, semiangle_cutoff: float | None = None, detectors: Mapping[str, Any] | None = None) -> Path:
    """The mean diffraction pattern on a log scale, in mrad, with the detector ranges drawn."""
    from matplotlib.patches import Circle

    fig, (ax,) = _figure()
    nx, ny = mean_pattern.shape
    ext = [-(nx // 2) * mrad_per_pixel[0], (nx - nx // 2) * mrad_per_pixel[0], -(ny // 2) * mrad_per_pixel[1], (ny - ny // 2) * mrad_per_pixel[1]]
    floor = max(float(mean_pattern.max()) * 1e-6, 1e-12)
    _image(fig, ax, np.log10(np.maximum(mean_pattern, floor)), ext, "Mean diffraction pattern", "log₁₀ intensity (fraction of beam)", cmap="inferno", xlabel="θx (mrad)", ylabel="θy (mrad)")
    colors = iter(["cyan", "lime", "white", "yellow", "magenta"])
    for name, rng in (detectors or {}).items():
        c = next(colors, "white")
        for r in rng:
            ax.add_patch(Circle((0, 0), r, fill=False, color=c, lw=0.8, ls="--"))
        ax.plot([], [], color=c, ls="--", label=f"{name} {rng[0]:g}–{rng[1]:g} mrad")
    if semiangle_cutoff:
        ax.add_patch(Circle((0, 0), semiangle_cutoff, fill=False, color="white", lw=0.6))
    if detectors:
        ax.legend(loc="upper right", fontsize=7)
    return _save(fig, path)


def plot_virtual_images(path: Path, images: Mapping[str, np.ndarray], scan_step: tuple[float, float], scan_origin: tuple[float, float] = (0.0, 0.0), *, detectors: Mapping[str, Any] | None = None) -> Path:
    """The virtual detector images side by side, axes in Å."""
    names = list(images)
    fig, axes = _figure(max(1, len(names)))
    for ax, name in zip(axes, names):
        img = np.asarray(images[name])
        rng = (detectors or {}).get(name)
        title = f"Virtual {name.upper()}" + (f" ({rng[0]:g}–{rng[1]:g} mrad)" if rng is not None else "")
        _image(fig, ax, img, _extent(img.shape, scan_step, scan_origin), title, "fraction of beam", cmap="gray")
    return _save(fig, path)


def plot_phase_comparison(path: Path, reconstructed: np.ndarray, truth: np.ndarray, sampling: tuple[float, float], *, correlation: float | None = None, origin: tuple[float, float] = (0.0, 0.0)) -> Path:
    """Reconstructed object phase beside the ground truth σ·ΣV over the same area (radians)."""
    fig, axes = _figure(2)
    rec = np.asarray(reconstructed) - float(np.mean(reconstructed))
    tru = np.asarray(truth) - float(np.mean(truth))
    ext = _extent(rec.shape, sampling, origin)
    _image(fig, axes[0], rec, ext, "Reconstructed phase" + (f" (r = {correlation:.3f})" if correlation is not None else ""), "phase (rad, mean removed)", cmap="magma")
    _image(fig, axes[1], tru, ext, "Ground truth σ·ΣV", "phase (rad, mean removed)", cmap="magma")
    return _save(fig, path)


def plot_probe(path: Path, probe: np.ndarray, sampling: tuple[float, float]) -> Path:
    """The reconstructed probe (first mode): intensity and phase in real space."""
    p = np.asarray(probe)
    p = p[0] if p.ndim == 3 else p
    fig, axes = _figure(2)
    nx, ny = p.shape
    ext = [-(nx // 2) * sampling[0], (nx - nx // 2) * sampling[0], -(ny // 2) * sampling[1], (ny - ny // 2) * sampling[1]]
    _image(fig, axes[0], np.abs(p) ** 2, ext, "Probe intensity |ψ|²", "fraction of beam per pixel", cmap="magma")
    amp = np.abs(p)
    phase = np.where(amp > 0.05 * amp.max(), np.angle(p), np.nan)
    _image(fig, axes[1], phase, ext, "Probe phase (where |ψ| > 5% of max)", "rad", cmap="twilight", vmin=-np.pi, vmax=np.pi)
    return _save(fig, path)


def plot_loss(path: Path, loss: np.ndarray, *, name: str = "loss") -> Path:
    """The loss per iteration (log scale)."""
    fig, (ax,) = _figure(width=5.0, height=3.6)
    v = np.asarray(loss, np.float64)
    ax.plot(np.arange(1, v.size + 1), v, marker="o", ms=3)
    if v.size and np.all(v > 0):
        ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{name} loss (mean per pattern)")
    ax.set_title("Reconstruction convergence")
    ax.grid(alpha=0.3)
    return _save(fig, path)


# --------------------------------------------------------------------------- preprocessing (issue 21)


def plot_preprocess(path: str | Path, values: Mapping[str, Any], arrays: Mapping[str, Any], summary: list[str]) -> Path:
    """One page: the mean pattern with the fitted disc; the centres of mass before and after
    re-centring (x and y maps); the relative curl against the rotation angle; the parallax fit
    (when estimated)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle

    a, v = arrays, values
    fig = Figure(figsize=(15, 8.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(2, 4)
    ax = fig.add_subplot(gs[0, 0])
    m = np.asarray(a["mean_pattern"])
    ax.imshow(np.log1p(m / max(m.max(), 1e-30) * 1e3).T, origin="lower", cmap="magma", interpolation="nearest")
    d = a["disc"]
    ax.add_patch(Circle(d.center, d.radius, fill=False, color="cyan", lw=1.2))
    ax.plot([d.center[0]], [d.center[1]], "c+", ms=10)
    ax.plot([m.shape[0] // 2], [m.shape[1] // 2], "wx", ms=8)
    ax.set_title(f"mean pattern (log), disc r {d.radius:.2f} px" + (f" = {v['disc_semiangle']:.1f} mrad" if "disc_semiangle" in v else ""), fontsize=8)
    ax.set_xlabel("qx (px)")
    ax.set_ylabel("qy (px)")
    for w in v.get("hot_pixels", []):
        ax.plot([w[0]], [w[1]], "o", mfc="none", mec="lime", ms=7)
    c = np.asarray(a["com"]) - np.array(v["detector_center"])
    after = np.asarray(a.get("com_after", a["com"])) - np.array(v["detector_center"])
    for k, (arr, name) in enumerate(((c, "before"), (after, "after"))):
        for comp in range(2):
            axc = fig.add_subplot(gs[comp, 1 + k])
            im = axc.imshow(arr[..., comp].T, origin="lower", cmap="RdBu_r", interpolation="nearest")
            fig.colorbar(im, ax=axc, shrink=0.8, label="px")
            axc.set_title(f"CoM {'xy'[comp]} − centre, {name}", fontsize=9)
            axc.set_xlabel("scan i")
            axc.set_ylabel("scan j")
    ax = fig.add_subplot(gs[0, 3])
    fit = a.get("rotation_fit")
    if fit is not None:
        ax.plot(fit.angles, fit.curl_plain, label="not transposed")
        ax.plot(fit.angles, fit.curl_transposed, label="transposed")
        ax.axvline(fit.rotation % 180.0, color="k", ls=":", lw=1)
        ax.set_title(f"DPC curl: minimum at {fit.rotation % 180.0:.2f} deg (mod 180), transpose {'yes' if fit.transpose else 'no'}", fontsize=8)
        ax.set_xlabel("rotation (deg, mod 180)")
        ax.set_ylabel("Σcurl² / Σ(curl² + div²)")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "scan frame not fitted", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
    ax = fig.add_subplot(gs[1, 0])
    pf = a.get("parallax_fit")
    if pf is not None:
        k = np.asarray(pf.frequencies)
        ax.quiver(k[:, 0], k[:, 1], pf.shifts[:, 0], pf.shifts[:, 1], color="k", angles="xy", label="measured")
        ax.quiver(k[:, 0], k[:, 1], pf.model_shifts[:, 0], pf.model_shifts[:, 1], color="r", angles="xy", alpha=0.6, label="fit")
        ax.set_aspect("equal")
        ax.set_xlabel("kx (1/Å)")
        ax.set_ylabel("ky (1/Å)")
        ax.set_title(f"parallax: defocus {v.get('defocus', float('nan')):.1f} Å, C12 {v.get('astigmatism', float('nan')):.1f} Å", fontsize=8)
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "\n".join(_wrap_lines(v.get("defocus_note", "parallax not run"), 40)), ha="center", va="center", transform=ax.transAxes, fontsize=9)
        ax.set_axis_off()
    ax = fig.add_subplot(gs[1, 3])
    ax.set_axis_off()
    ax.text(0.0, 1.0, "\n".join(_wrap_lines("\n".join(summary[1:]), 52)), va="top", ha="left", family="monospace", fontsize=7, transform=ax.transAxes)
    path = Path(path)
    fig.savefig(path)
    return path


def _wrap_lines(text: str, width: int) -> list[str]:
    import textwrap

    out: list[str] = []
    for line in text.splitlines():
        out += textwrap.wrap(line, width, subsequent_indent="    ") or [""]
    return out

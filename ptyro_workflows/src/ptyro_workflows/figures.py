"""PNG figures a microscopist looks at first. The only module that imports matplotlib, and it
uses the Agg canvas directly (no global backend switch).

Every function draws from plain arrays (no JAX) and returns the matplotlib ``Figure`` (which a
notebook shows inline); with a ``path`` it is also saved there as PNG.

Orientation: every real-space image is drawn with x to the right and y up (``array.T``,
``origin="lower"``), axes labelled in Å; diffraction patterns in mrad.
"""

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "plot_projected_potential",
    "plot_mean_diffraction",
    "plot_images",
    "plot_cbed",
    "plot_phase_comparison",
    "plot_probe",
    "plot_loss",
    "plot_preprocess",
    "robust_limits",
    "preload",
    "prepare",
    "prepare_steps",
]

_RING_COLOURS = ("cyan", "lime", "yellow", "magenta", "orange", "white")


_DPI = 100  # PNG resolution; a 3-inch panel is 300 pixels


def preload() -> None:
    """Import now what the first figure would (matplotlib's figure, the Agg canvas, its fonts),
    e.g. in a drawing process started before there is anything to draw."""
    from matplotlib.backends import backend_agg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401


def _canvas(width: float, height: float) -> Any:
    """A figure of ``width`` x ``height`` inches on the Agg canvas, without a layout engine
    (every axes is placed at a fixed position: drawing then needs no layout pass)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


#: ``_grid``'s layout: (panels, columns, panel size, colour-bar flags, left, bottom, top, legend), inches
_Layout = tuple[int, int, float, tuple[bool, ...], float, float, float, float]

#: blank figures made ahead of their data (:func:`prepare`), by layout (a ``_Layout``, or
#: ``"loss"``): the next figure of that layout takes one, its canvas, axes and tick artists made
_SPARE: dict[Any, list[Any]] = {}


def _layout(
    n: int,
    ncols: int | None = None,
    *,
    panel: float = 3.0,
    cbars: bool | Sequence[bool] = True,
    left: float = 0.8,
    bottom: float = 0.55,
    top: float = 0.35,
    legend: float = 0.0,
) -> _Layout:
    """``n`` image panels in rows of ``ncols`` at fixed positions (inches): per cell, room for
    the tick labels and axis label at the ``left`` and ``bottom``, the title on ``top``, and at
    the right a colour bar with its labels (``cbars``: for all panels, or one flag per panel);
    ``legend`` inches are kept free below the grid."""
    ncols = max(1, min(ncols or n, n))
    flags = tuple([cbars] * n if isinstance(cbars, bool) else (bool(f) for f in cbars))
    return (n, ncols, float(panel), flags, float(left), float(bottom), float(top), float(legend))


def _boxes(layout: _Layout, aspects: Sequence[float] | None) -> tuple[float, float, list[tuple[float, ...]], list[tuple[float, ...] | None]]:
    """The figure's width and height (inches) and every cell's axes and colour-bar boxes (in
    figure fractions; None: no colour bar) for images of ``aspects``."""
    n, ncols, panel, flags, left, bottom, top, legend = layout
    nrows = -(-n // ncols)
    aspects = list(aspects) if aspects is not None else [1.0] * n
    # a column is wider by the colour bar's room when one of its panels has a colour bar
    cws = [left + panel + 0.2 + (0.95 if any(flags[c::ncols]) else 0.0) for c in range(ncols)]
    ch = top + panel + bottom
    width, height = sum(cws), nrows * ch + legend
    boxes: list[tuple[float, ...]] = []
    cboxes: list[tuple[float, ...] | None] = []
    for k in range(nrows * ncols):
        r, c = divmod(k, ncols)
        a = aspects[k] if k < n else 1.0
        w, h = panel * min(1.0, a), panel * min(1.0, 1.0 / a)
        x0, y0 = sum(cws[:c]) + left, legend + (nrows - 1 - r) * ch + bottom + (panel - h) / 2
        boxes.append((x0 / width, y0 / height, w / width, h / height))
        cboxes.append(((x0 + w + 0.1) / width, y0 / height, 0.12 / width, h / height) if k < n and flags[k] else None)
    return width, height, boxes, cboxes


def _grid(layout: _Layout, aspects: Sequence[float]) -> tuple[Any, list[Any], list[Any]]:
    """A figure of ``layout`` (:func:`_layout`) whose axes boxes have their images' ``aspects``
    (x extent / y extent): (figure, axes, colour-bar axes or None for each panel). One made
    ahead (:func:`prepare`) is taken, its axes moved into place."""
    spare = _SPARE.get(layout)
    if not spare:
        return _blank(layout, aspects)
    fig, axes, caxes = spare.pop()
    _, _, boxes, cboxes = _boxes(layout, aspects)
    for ax, cax, box, cbox in zip(axes, caxes, boxes, cboxes):
        ax.set_position(box)
        if cax is not None:
            cax.set_position(cbox)
    return fig, axes, caxes


def _blank(layout: _Layout, aspects: Sequence[float] | None) -> tuple[Any, list[Any], list[Any]]:
    """A new figure of ``layout``: its panels' and colour bars' axes, nothing drawn in them."""
    fig, cells = _cells(layout, aspects)
    made = list(cells)
    return fig, [ax for ax, _ in made], [cax for _, cax in made]


def _cells(layout: _Layout, aspects: Sequence[float] | None) -> tuple[Any, Iterator[tuple[Any, Any]]]:
    """A new figure of ``layout`` and what adds its cells' axes, one cell a step: (the panel's
    axes, the colour bar's or None)."""
    width, height, boxes, cboxes = _boxes(layout, aspects)
    fig = _canvas(width, height)
    return fig, ((fig.add_axes(box), fig.add_axes(cbox) if cbox is not None else None) for box, cbox in zip(boxes, cboxes))


#: each figure's layout from what it shows (the arguments of its ``_grid`` but the aspects)
_LAYOUTS: dict[str, Any] = {
    "potential": lambda: _layout(1, panel=3.6),
    "mean_diffraction": lambda entries: _layout(1, panel=4.2, legend=0.12 + 0.15 * -(-entries // 2)),
    "images": lambda n, ncols=None, marks=False: _layout(n, ncols or (n if n <= 3 else 3), panel=2.8, legend=0.35 if marks else 0.0),
    "cbed": lambda n: _layout(n, panel=3.2, cbars=[k == n - 1 for k in range(n)]),
    "phase": lambda: _layout(2, panel=3.2, cbars=[False, True]),
    "probe": lambda: _layout(3, panel=2.8),
}

#: tick artists made ahead per axis (what the demo's figures draw: 5-7 on a panel's axes and
#: a colour bar's, 8 and 16 minor ones on the loss's log scale)
_TICKS = 7


def prepare(figure: str, **counts: Any) -> None:
    """Make a blank figure for a later ``plot_<figure>`` now, with its axes and their tick
    artists (about a third of a figure's drawing time, measured: 0.35 of 1.08 s CPU for the
    demo's eight), e.g. in a drawing process while it waits for the data: the next figure of
    that layout takes it and draws the same pixels. ``figure``: ``"loss"``, or one of
    ``"potential"``, ``"phase"``, ``"probe"``, ``"mean_diffraction"`` (``entries``: legend
    entries), ``"images"`` (``n`` panels, ``ncols``, ``marks``) and ``"cbed"`` (``n``)."""
    for _ in prepare_steps(figure, **counts):
        pass


def prepare_steps(figure: str, **counts: Any) -> Iterator[None]:
    """:func:`prepare` one cell (a panel's axes, its colour bar's, their tick artists: a few ms)
    a step, for work done between other work (which then waits at most a step); the figure is
    taken only once it is whole."""
    if figure == "loss":
        fig, ax = _loss_canvas()
        ax.xaxis.get_major_ticks(8)
        ax.yaxis.get_major_ticks(_TICKS)
        ax.yaxis.get_minor_ticks(16)
        _SPARE.setdefault("loss", []).append((fig, ax))
        return
    if figure not in _LAYOUTS:
        from ptyro_core import PtyroValueError

        raise PtyroValueError(f"figure {figure!r} has no layout to prepare; expected one of {', '.join([*_LAYOUTS, 'loss'])}")
    layout = _LAYOUTS[figure](**counts)
    fig, cells = _cells(layout, None)
    axes, caxes = [], []
    for k, (ax, cax) in enumerate(cells):
        if k:
            yield
        ax.xaxis.get_major_ticks(_TICKS)
        ax.yaxis.get_major_ticks(_TICKS)
        if cax is not None:
            cax.yaxis.get_major_ticks(_TICKS)
        axes.append(ax)
        caxes.append(cax)
    _SPARE.setdefault(layout, []).append((fig, axes, caxes))


def _loss_axes() -> tuple[Any, Any]:
    """The loss figure's canvas and axes (one made ahead by :func:`prepare` if there is one)."""
    spare = _SPARE.get("loss")
    return spare.pop() if spare else _loss_canvas()  # type: ignore[no-any-return]


def _loss_canvas() -> tuple[Any, Any]:
    fig = _canvas(5.0, 3.4)
    return fig, fig.add_axes((0.8 / 5.0, 0.55 / 3.4, 4.0 / 5.0, 2.5 / 3.4))


def _aspect(extent: Sequence[float]) -> float:
    return abs(extent[1] - extent[0]) / max(abs(extent[3] - extent[2]), 1e-30)


def _done(fig: Any, path: Path | str | None) -> Any:
    """Save ``fig`` as PNG at ``path`` (when given): written under a temporary name and renamed,
    so that an interrupted or failed drawing never leaves a half-written figure."""
    if path is not None:
        from ptyro_workflows.io.safety import atomic_output

        # overwrite: whether a figure may be replaced was decided before drawing (show's _check_out)
        with atomic_output(path, overwrite=True) as tmp:  # fast zlib level: a third of the encoding time, files ~20 % larger
            fig.savefig(tmp, format="png", pil_kwargs={"compress_level": 1})
    return fig


def robust_limits(*images: Any, lo: float = 0.5, hi: float = 99.5) -> tuple[float, float]:
    """Colour limits spanning the ``lo``-th to ``hi``-th percentile of all ``images`` together
    (one scale for all), so that a few hot pixels do not set the scale."""
    return float(min(np.percentile(i, lo) for i in images)), float(max(np.percentile(i, hi) for i in images))


def _mantissa(v: float) -> int:
    """The leading digit of a positive number (0.005 -> 5)."""
    return int(round(v / 10 ** np.floor(np.log10(v)))) if v > 0 else 0


def _image(
    fig: Any,
    ax: Any,
    img: np.ndarray,
    extent: list[float],
    title: str,
    cbar: str | None,
    *,
    cax: Any = None,
    cmap: str = "viridis",
    xlabel: str = "x (Å)",
    ylabel: str = "y (Å)",
    **kw: Any,
) -> Any:
    im = ax.imshow(np.asarray(img).T, origin="lower", extent=extent, cmap=cmap, interpolation="nearest", **kw)
    ax.set_title(title, fontsize=9, y=1.0)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.locator_params(nbins=5)  # fewer tick labels: text layout is most of the drawing time
    if cax is not None:
        from matplotlib.ticker import MaxNLocator

        cb = fig.colorbar(im, cax=cax, ticks=MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
        cb.set_label(cbar or "", fontsize=8)
        cax.tick_params(labelsize=7)
    return im


def _extent(shape: tuple[int, ...], sampling: Sequence[float], origin: Sequence[float] = (0.0, 0.0)) -> list[float]:
    """Pixel edges: pixel i covers [origin + (i - 1/2) d, origin + (i + 1/2) d]."""
    return [origin[0] - sampling[0] / 2, origin[0] + (shape[0] - 0.5) * sampling[0], origin[1] - sampling[1] / 2, origin[1] + (shape[1] - 0.5) * sampling[1]]


def _centred_extent(shape: tuple[int, ...], step: Sequence[float]) -> list[float]:
    nx, ny = shape[:2]
    return [-(nx // 2 + 0.5) * step[0], (nx - nx // 2 - 0.5) * step[0], -(ny // 2 + 0.5) * step[1], (ny - ny // 2 - 0.5) * step[1]]


def plot_projected_potential(
    path: Path | str | None,
    projected: np.ndarray,
    sampling: Sequence[float],
    *,
    scan_box: tuple[Any, Any] | None = None,
    clip_percentile: float = 99.0,
    title: str = "Projected potential ΣV",
) -> Any:
    """ΣV (V·Å) over the cell, with the scanned area outlined. The colour scale stops at the
    ``clip_percentile``-th percentile, so that the single-pixel peaks of the atom cores (which
    depend on where a nucleus falls within its pixel) do not make equal columns look unequal."""
    ext = _extent(projected.shape, sampling)
    fig, (ax,), (cax,) = _grid(_LAYOUTS["potential"](), [_aspect(ext)])
    vmax = float(np.percentile(projected, clip_percentile))
    _image(
        fig,
        ax,
        projected,
        ext,
        title,
        f"V·Å (clipped at the {clip_percentile:g}th percentile)",
        cax=cax,
        cmap="magma",
        vmin=float(np.min(projected)),
        vmax=vmax,
    )
    if scan_box is not None:
        from matplotlib.patches import Rectangle

        (x0, y0), (x1, y1) = scan_box
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="cyan", lw=1.2, label="scanned area"))
        ax.legend(loc="upper right", fontsize=8)
    return _done(fig, path)


def plot_mean_diffraction(
    path: Path | str | None,
    mean_pattern: np.ndarray,
    mrad_per_pixel: Sequence[float],
    *,
    semiangle_cutoff: float | None = None,
    detectors: Mapping[str, Sequence[float]] | None = None,
    band_limit: float | None = None,
) -> Any:
    """The mean diffraction pattern on a log scale, in mrad, with the detector ranges as filled
    annuli (so a detector that ends at the aperture edge stays visible), the aperture edge and
    the band limit of the simulation grid."""
    from matplotlib.patches import Circle, Wedge

    ext = _centred_extent(mean_pattern.shape, mrad_per_pixel)
    entries = len(detectors or {}) + bool(semiangle_cutoff) + bool(band_limit)
    fig, (ax,), (cax,) = _grid(_LAYOUTS["mean_diffraction"](entries), [_aspect(ext)])
    floor = max(float(mean_pattern.max()) * 1e-6, 1e-12)
    _image(
        fig,
        ax,
        np.log10(np.maximum(mean_pattern, floor)),
        ext,
        "Mean diffraction pattern",
        "log₁₀ intensity",
        cax=cax,
        cmap="gray",
        xlabel="θx (mrad)",
        ylabel="θy (mrad)",
    )
    for (name, rng), c in zip((detectors or {}).items(), _RING_COLOURS):
        inner, outer = float(rng[0]), float(rng[1])
        ax.add_patch(Wedge((0, 0), outer, 0, 360, width=outer - inner, facecolor=c, alpha=0.07, edgecolor="none"))
        for r in (inner, outer):
            if r > 0:
                ax.add_patch(Circle((0, 0), r, fill=False, color=c, lw=1.0, ls="--"))
        ax.plot([], [], color=c, ls="--", label=f"{name} {inner:g}–{outer:g} mrad")
    if semiangle_cutoff:
        ax.add_patch(Circle((0, 0), semiangle_cutoff, fill=False, color="white", lw=0.8, ls=":", label=f"aperture {semiangle_cutoff:g} mrad"))
    if band_limit:
        ax.add_patch(Circle((0, 0), band_limit, fill=False, color="red", lw=1.0, label=f"band limit {band_limit:.0f} mrad (2/3 Nyquist)"))
    if detectors or semiangle_cutoff or band_limit:
        fig.legend(loc="lower center", ncols=2, fontsize=7, facecolor="0.25", labelcolor="white", framealpha=1.0)
    return _done(fig, path)


def plot_images(
    path: Path | str | None,
    images: Mapping[str, tuple[Any, ...]],
    step: Sequence[float],
    origin: Sequence[float] = (0.0, 0.0),
    *,
    marks: Mapping[str, Sequence[float]] | None = None,
    ncols: int | None = None,
    cmap: str = "gray",
) -> Any:
    """Images side by side (``{title: (image, colour-bar label, colour map or "")}``, or with a
    fourth element ``(vmin, vmax)``: fixed colour limits), axes in Å; ``marks`` ({label: (x, y)
    Å}) are drawn on every panel."""
    n = max(1, len(images))
    exts = [_extent(np.shape(v[0]), step, origin) for v in images.values()]
    fig, axes, caxes = _grid(_LAYOUTS["images"](n, ncols, bool(marks)), [_aspect(e) for e in exts])
    for k, (ax, cax, ext, (title, (img, label, cm, *lims))) in enumerate(zip(axes, caxes, exts, images.items())):
        limits = dict(zip(("vmin", "vmax"), lims[0])) if lims else {}
        _image(fig, ax, np.asarray(img), ext, title, label, cax=cax, cmap=cm or cmap, **limits)
        for (name, (x, y)), c in zip((marks or {}).items(), ("red", "deepskyblue", "lime", "yellow")):
            ax.plot([x], [y], ls="none", marker="o", mfc="none", mec=c, ms=10, mew=1.8, label=f"CBED {name}" if k == 0 else None)
    for ax in axes[n:]:
        ax.set_axis_off()
    if marks:
        fig.legend(loc="lower center", ncols=len(marks), fontsize=8)
    return _done(fig, path)


def plot_cbed(path: Path | str | None, patterns: Mapping[str, np.ndarray], mrad_per_pixel: Sequence[float], *, semiangle_cutoff: float | None = None) -> Any:
    """Single diffraction patterns (CBED) side by side, log scale, one colour scale."""
    from matplotlib.patches import Circle

    n = max(1, len(patterns))
    exts = [_centred_extent(np.shape(p), mrad_per_pixel) for p in patterns.values()]
    fig, axes, caxes = _grid(_LAYOUTS["cbed"](n), [_aspect(e) for e in exts])
    top = max(float(np.max(p)) for p in patterns.values())
    floor = max(top * 1e-5, 1e-12)
    for ax, cax, ext, (title, p) in zip(axes, caxes, exts, patterns.items()):
        _image(
            fig,
            ax,
            np.log10(np.maximum(p, floor)),
            ext,
            title,
            "log₁₀ intensity (one scale)",
            cax=cax,
            cmap="inferno",
            xlabel="θx (mrad)",
            ylabel="θy (mrad)",
            vmin=np.log10(floor),
            vmax=np.log10(top),
        )
        if semiangle_cutoff:
            ax.add_patch(Circle((0, 0), semiangle_cutoff, fill=False, color="white", lw=0.6, ls=":"))
    return _done(fig, path)


def plot_phase_comparison(
    path: Path | str | None,
    reconstructed: np.ndarray,
    truth: np.ndarray,
    sampling: Sequence[float],
    *,
    correlation: float | None = None,
    origin: Sequence[float] = (0.0, 0.0),
    truth_title: str = "Ground truth σ·ΣV",
) -> Any:
    """Reconstructed object phase beside the ground truth over the same area, mean removed, on
    one colour scale (so equal contrast looks equal)."""
    rec = np.asarray(reconstructed, np.float64) - float(np.mean(reconstructed))
    tru = np.asarray(truth, np.float64) - float(np.mean(truth))
    lo, hi = robust_limits(rec, tru)
    ext = _extent(rec.shape, sampling, origin)
    fig, axes, caxes = _grid(_LAYOUTS["phase"](), [_aspect(ext)] * 2)
    title = "Reconstructed phase" + (f" (r = {correlation:.3f})" if correlation is not None else "")
    _image(fig, axes[0], rec, ext, title, None, cmap="magma", vmin=lo, vmax=hi)
    _image(fig, axes[1], tru, ext, truth_title, "phase (rad, mean removed; one scale)", cax=caxes[1], cmap="magma", vmin=lo, vmax=hi)
    return _done(fig, path)


def plot_probe(
    path: Path | str | None,
    probe: np.ndarray,
    sampling: Sequence[float],
    *,
    mrad_per_pixel: Sequence[float] | None = None,
    semiangle_cutoff: float | None = None,
) -> Any:
    """The probe (first mode): intensity and phase in real space, amplitude in reciprocal
    space (mrad when ``mrad_per_pixel`` is given, else pixels; zoomed to 2.5 α with the
    aperture edge dotted when ``semiangle_cutoff`` is given)."""
    p = np.asarray(probe)
    p = p[0] if p.ndim == 3 else p
    ext = _centred_extent(p.shape, sampling)
    fig, axes, caxes = _grid(_LAYOUTS["probe"](), [_aspect(ext), _aspect(ext), 1.0 if semiangle_cutoff and mrad_per_pixel else _aspect(ext)])
    _image(fig, axes[0], np.abs(p) ** 2, ext, "Probe intensity |ψ|²", "fraction of beam per pixel", cax=caxes[0], cmap="magma")
    amp = np.abs(p)
    phase = np.where(amp > 0.05 * amp.max(), np.angle(p), np.nan)
    _image(fig, axes[1], phase, ext, "Probe phase (|ψ| > 5% of max)", "rad", cax=caxes[1], cmap="twilight", vmin=-np.pi, vmax=np.pi)
    fourier = np.abs(np.fft.fftshift(np.fft.fft2(p, norm="ortho")))
    step = mrad_per_pixel or (1.0, 1.0)
    unit = "mrad" if mrad_per_pixel else "pixels"
    _image(
        fig,
        axes[2],
        fourier,
        _centred_extent(p.shape, step),
        "Probe in reciprocal space |ψ̃|",
        "amplitude",
        cax=caxes[2],
        cmap="magma",
        xlabel=f"θx ({unit})",
        ylabel=f"θy ({unit})",
    )
    if semiangle_cutoff and mrad_per_pixel:
        from matplotlib.patches import Circle

        lim = 2.5 * semiangle_cutoff
        axes[2].set_xlim(-lim, lim)
        axes[2].set_ylim(-lim, lim)
        axes[2].add_patch(Circle((0, 0), semiangle_cutoff, fill=False, color="cyan", lw=0.8, ls=":"))
    return _done(fig, path)


def plot_loss(path: Path | str | None, loss: np.ndarray, *, name: str = "loss", noise_floor: Any = None) -> Any:
    """The loss per iteration (log scale); with ``noise_floor`` (per iteration, or one value:
    the loss expected at the shot noise of counted data, ``report[i]["noise_floor"]`` of
    ptyro_invert) drawn beside it, so convergence is judged without a ground truth."""
    fig, ax = _loss_axes()
    v = np.asarray(loss, np.float64)
    ax.plot(np.arange(1, v.size + 1), v, marker="o", ms=3, label=f"{name} loss")
    if noise_floor is not None:
        fl = np.broadcast_to(np.asarray(noise_floor, np.float64), v.shape)
        ax.plot(np.arange(1, v.size + 1), fl, ls="--", color="0.4", label="noise floor (shot noise)")
        ax.legend(fontsize=8)
    if v.size and np.all(v > 0):
        ax.set_yscale("log")
        # plain-number tick labels ("0.005"): the default 10^x labels need the mathtext parser (~0.3 s)
        from matplotlib.ticker import FuncFormatter

        few = np.log10(v.max() / v.min()) < 2
        ax.yaxis.set_major_formatter(FuncFormatter(lambda t, _: f"{t:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda t, _: f"{t:g}" if few and _mantissa(t) in (2, 5) else ""))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"{name} loss (mean per pattern)")
    ax.set_title("Reconstruction convergence", y=1.0)
    ax.grid(alpha=0.3)
    return _done(fig, path)


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
        freq = np.asarray(pf.frequencies)
        ax.quiver(freq[:, 0], freq[:, 1], pf.shifts[:, 0], pf.shifts[:, 1], color="k", angles="xy", label="measured")
        ax.quiver(freq[:, 0], freq[:, 1], pf.model_shifts[:, 0], pf.model_shifts[:, 1], color="r", angles="xy", alpha=0.6, label="fit")
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

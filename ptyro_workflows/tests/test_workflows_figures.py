"""The demo's figures: drawn without a layout engine, every label inside the canvas, no two
panels overlapping, colour scales not set by a hot pixel. Synthetic arrays, no JAX."""

import h5py
import numpy as np
import pytest

pytest.importorskip("matplotlib")

from ptyro_workflows import figures, show  # noqa: E402


def _rng_image(shape=(24, 20), seed=0):
    return np.random.default_rng(seed).random(shape)


def _all_figures():
    """Every demo figure drawn from small synthetic arrays (name -> Figure)."""
    img = _rng_image()
    pattern = np.exp(-np.hypot(*np.meshgrid(np.arange(32) - 16, np.arange(32) - 16, indexing="ij")) / 4)
    probe = np.exp(1j * _rng_image((32, 32))) * pattern
    dets = {"bf": [0, 10], "abf": [10, 20], "adf": [25, 55], "haadf": [60, 82]}
    panels = {f"{n.upper()}": (_rng_image((8, 8), k), "fraction of beam", "gray") for k, n in enumerate(dets)}
    panels["iDPC"] = (_rng_image((8, 8), 9), "rad", "magma")
    return {
        "potential": figures.plot_projected_potential(None, img * 1000, (0.5, 0.5), scan_box=((2, 2), (6, 6)), title="Projected potential ΣV (ground truth)"),
        "mean_diffraction": figures.plot_mean_diffraction(None, pattern, (4.3, 4.3), semiangle_cutoff=20, detectors=dets, band_limit=46),
        "virtual_images": figures.plot_images(None, panels, (0.49, 0.49), (3.9, 3.9), marks={"on a column": (4, 4), "between columns": (6, 6)}),
        "cbed": figures.plot_cbed(None, {"CBED on a column (3.90, 3.90) Å": pattern, "CBED between columns (9.76, 11.23) Å": pattern**2}, (4.3, 4.3)),
        "phase": figures.plot_phase_comparison(None, img, img[::-1], (0.1, 0.1), correlation=0.9, truth_title="Truth σ·ΣV, band-limited to 2α = 40 mrad"),
        "probe": figures.plot_probe(None, probe, (0.1, 0.1), mrad_per_pixel=(4.0, 4.0), semiangle_cutoff=20),
        "loss": figures.plot_loss(None, np.geomspace(0.012, 0.002, 20), name="amplitude"),
    }


def _ink_on_border(rgb, width=2):
    """Whether any of the outermost ``width`` pixels of an RGB image (0-1) is not white."""
    border = np.concatenate([rgb[:width].reshape(-1, 3), rgb[-width:].reshape(-1, 3), rgb[:, :width].reshape(-1, 3), rgb[:, -width:].reshape(-1, 3)])
    return bool((border < 0.99).any())


@pytest.fixture(scope="module")
def drawn():
    out = _all_figures()
    for fig in out.values():
        fig.canvas.draw()
    return out


@pytest.mark.parametrize("name", ["potential", "mean_diffraction", "virtual_images", "cbed", "phase", "probe", "loss"])
def test_every_label_is_inside_the_figure_and_panels_do_not_overlap(drawn, name):
    fig = drawn[name]
    assert fig.get_layout_engine() is None  # fixed positions: no layout pass when drawing
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    # each axes' extent with its drawn tick labels, axis labels and title; the legends
    extents = [ax.get_tightbbox(renderer) for ax in fig.axes if ax.get_visible() and ax.axison]
    for e in extents + [leg.get_window_extent(renderer) for leg in fig.legends]:
        # the y label of potential.png was cut at the left edge before
        assert e.x0 >= box.x0 - 1 and e.x1 <= box.x1 + 1 and e.y0 >= box.y0 - 1 and e.y1 <= box.y1 + 1, (name, e, box)
    # nothing drawn on the outermost pixels: a label cut at the edge leaves ink there
    assert not _ink_on_border(np.asarray(fig.canvas.buffer_rgba())[..., :3] / 255.0), name
    # axes (with their tick labels and axis labels) do not run into one another
    for i, a in enumerate(extents):
        for b in extents[i + 1 :]:
            overlap_w = min(a.x1, b.x1) - max(a.x0, b.x0)
            overlap_h = min(a.y1, b.y1) - max(a.y0, b.y0)
            assert overlap_w <= 1 or overlap_h <= 1, (name, a, b)


def test_the_object_phase_scale_is_not_set_by_one_hot_pixel(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    phase = 0.3 * rng.standard_normal((40, 40))
    phase[5, 7] = 3.0  # one hot pixel at the field's edge
    with h5py.File(tmp_path / "rec.h5", "w") as f:
        g = f.create_group("reconstruction")
        amplitude = np.ones_like(phase)
        amplitude[20, 20] = 0.2
        g["object"] = (amplitude * np.exp(1j * phase))[None].astype(np.complex64)
        g["probe"] = np.ones((1, 16, 16), np.complex64) / 16
        g["positions"] = np.zeros((4, 2))
        g["loss"] = np.array([2.0, 1.0])
        g.attrs["sampling"] = np.array([0.2, 0.2])
        g.attrs["energy"] = 200e3
    drawn = {}
    original = figures.plot_images

    def keep(path, images, *a, **k):
        drawn["panels"] = images
        drawn["fig"] = original(path, images, *a, **k)
        return drawn["fig"]

    monkeypatch.setattr(figures, "plot_images", keep)
    show.reconstruction_figures(tmp_path / "rec.h5", tmp_path / "out")
    title = next(t for t in drawn["panels"] if t.startswith("Object phase"))
    assert "99.5" in title  # the clipping is said on the figure
    phase_image, amplitude_image = (ax.images[0] for ax in drawn["fig"].axes if ax.images)
    vmin, vmax = phase_image.get_clim()
    assert vmax < 1.5 < 3.0 and vmin > -1.5
    assert vmax == pytest.approx(np.percentile(phase, 99.5), abs=1e-5)
    # the amplitude keeps its full range
    assert amplitude_image.get_clim() == pytest.approx((0.2, 1.0), abs=1e-5)
    # drawn in two halves (as the demo's drawing process and its forked copy do): each half its own files and lines
    a = show.reconstruction_figures(tmp_path / "rec.h5", tmp_path / "halves", only=("loss.png",))
    b = show.reconstruction_figures(tmp_path / "rec.h5", tmp_path / "halves", only=("object.png", "probe.png"))
    assert [p.name for p in a["files"]] == ["loss.png"] and a["lines"] == ["loss 2 -> 1 over 2 iterations; 1 slice(s), 1 probe mode(s)"]
    assert [p.name for p in b["files"]] == ["object.png", "probe.png"] and b["lines"] == []
    assert sorted(p.name for p in (tmp_path / "halves").iterdir()) == ["loss.png", "object.png", "probe.png"]


def test_robust_limits_span_all_images_and_ignore_outliers():
    a = np.linspace(0.0, 1.0, 1001)
    b = a + 0.5
    b[0] = 100.0
    lo, hi = figures.robust_limits(a, b)
    assert lo == pytest.approx(np.percentile(a, 0.5)) and hi == pytest.approx(np.percentile(b, 99.5))
    assert hi < 2.0


def test_a_figure_that_fails_while_being_written_leaves_nothing(tmp_path, monkeypatch):
    """A PNG is written under a temporary name and renamed: a failure (here the encoder, after
    part of the file is out) leaves neither a half-written figure nor the temporary; an existing
    figure of that name stays as it was."""
    from matplotlib.figure import Figure

    path = tmp_path / "loss.png"
    figures.plot_loss(path, np.geomspace(0.012, 0.002, 5))
    before = path.read_bytes()
    assert before[:8] == b"\x89PNG\r\n\x1a\n"

    def broken(self, fname, **kw):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError("encoder failed")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="encoder failed"):
        figures.plot_loss(path, np.geomspace(0.02, 0.001, 5))
    assert path.read_bytes() == before
    with pytest.raises(OSError):
        figures.plot_loss(tmp_path / "new.png", np.geomspace(0.02, 0.001, 5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png"]


def _pixels(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def test_a_figure_made_ahead_draws_the_same_pixels_and_is_taken_once():
    """Every figure drawn into a blank one made ahead (its axes and tick artists made before the
    data: what the demo's drawing process does while it waits) is pixel for pixel the one made
    at once; each made-ahead figure is taken by one drawing, and a layout made for other counts
    is not taken."""
    fresh = {name: _pixels(fig) for name, fig in _all_figures().items()}
    layouts = [
        ("potential", {}),
        ("mean_diffraction", {"entries": 6}),  # 4 detectors, the aperture, the band limit
        ("images", {"n": 5, "marks": True}),
        ("cbed", {"n": 2}),
        ("phase", {}),
        ("probe", {}),
        ("loss", {}),
        ("images", {"n": 4, "ncols": 2}),  # drawn by none of them
    ]
    try:
        for figure, counts in layouts:
            figures.prepare(figure, **counts)
        ahead = {name: _pixels(fig) for name, fig in _all_figures().items()}
        assert {k: len(v) for k, v in figures._SPARE.items() if v} == {figures._LAYOUTS["images"](4, 2): 1}
    finally:
        figures._SPARE.clear()
    for name in fresh:
        assert ahead[name].shape == fresh[name].shape and (ahead[name] == fresh[name]).all(), name


def test_preparing_an_unknown_figure_names_the_known_ones():
    from ptyro_core import PtyroValueError

    with pytest.raises(PtyroValueError, match="figure 'phaze' has no layout to prepare; expected one of potential, .*, loss"):
        figures.prepare("phaze")
    assert not any(figures._SPARE.values())


def test_a_figure_made_a_cell_a_step_is_taken_only_once_whole():
    """``prepare_steps`` (work between other work: a cell a step) leaves nothing to take until
    the figure is whole: a figure drawn meanwhile is made at once."""
    steps = figures.prepare_steps("probe")
    try:
        next(steps)  # one of its three cells left to make
        assert not any(figures._SPARE.values())
        assert len(list(steps)) == 1 and sum(len(v) for v in figures._SPARE.values()) == 1
    finally:
        figures._SPARE.clear()

"""A step run in streams (each batch in parts whose gradients are computed at once from separate
threads, then summed into one update) is the one-stream step: the same parameters after a few
passes, for every algorithm and the regularised path; the parts' gradients add up to the whole
batch's, and that gradient is the derivative of the loss (finite differences). The number of
streams: validated, lowered to a divisor of the batch, 1 on a mesh of several devices.

Plain gradient descent, as in test_invert_speedups.py (Adam turns round-off at the unlit rim into
learning-rate-sized steps)."""

import sys

if not hasattr(sys.modules.get("ptyro_invert"), "__file__") or sys.modules["ptyro_invert"].__file__ is None:
    sys.modules.pop("ptyro_invert", None)

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptyro_core import PtyroValueError
from ptyro_core.pipeline import device_mesh
from ptyro_invert import recon as R
from ptyro_invert import reconstruct
from ptyro_invert.synthetic import hexagonal_phase, setup, simulate, with_object

ONE = device_mesh(jax.devices()[:1])


@pytest.fixture(scope="module")
def cases():
    out = {}
    for slices in (1, 2):
        # 0.5 Å steps at 0.25 Å pixels: 2 px, one sub-pixel group (the grouped path: a batch shifts
        # the probe once); group_shifts=False below for a shift per position
        grid, scan, st0 = setup(gpts=24, sampling=0.25, scan=(5, 5), step=0.5, aberrations={"C10": 40.0}, padding_px=4,
                                num_slices=slices, slice_thickness=8.0 if slices > 1 else None)  # fmt: skip
        phase = hexagonal_phase(st0.object.shape[-2:], st0.sampling, origin=(0.3, 0.4))
        truth = with_object(st0, np.exp(1j * np.stack([phase] * slices) / slices))
        out[slices] = (st0, simulate(truth, grid, scan))
    return out


def _run(st0, data, algorithm, streams, **kw):
    opts = dict(iterations=2, batch_size=12, progress=False, optimizer="sgd", seed=3, mesh=ONE, streams=streams)
    opts.update(kw)
    return reconstruct(data, st0, algorithm, **opts)


@pytest.mark.parametrize(
    "algorithm, slices, extra",
    [
        ("single_slice", 1, {}),  # fixed positions grouped by sub-pixel shift
        ("single_slice", 1, {"group_shifts": False, "tv_weight": 1e-3}),  # per-batch ramps; a regulariser
        ("position_corrected", 1, {}),
        ("mixed_state", 1, {"num_modes": 2}),
        ("multislice", 2, {"fit_thickness": True}),
    ],
)
def test_streams_match_one_stream(cases, algorithm, slices, extra):
    st0, data = cases[slices]
    rates = {"object": 5.0, "probe": 0.5}
    if algorithm == "position_corrected":
        rates.update(positions=0.5, affine=1e-3)
    if extra.get("fit_thickness"):
        rates["thickness"] = 0.1
    one = _run(st0, data, algorithm, 1, learning_rates=rates, **extra)
    for k in (2, 3):  # batch 12: two parts of 6, three of 4 (25 positions: the last batch padded)
        many = _run(st0, data, algorithm, k, learning_rates=rates, **extra)
        change = float(jnp.max(jnp.abs(one.object - st0.object)))
        assert change > 0.05
        assert float(jnp.max(jnp.abs(many.object - one.object))) <= 1e-4 * change
        assert float(jnp.max(jnp.abs(many.probe - one.probe))) <= 1e-4 * float(jnp.max(jnp.abs(one.probe)))
        np.testing.assert_allclose(np.asarray(many.positions), np.asarray(one.positions), atol=1e-5)
        np.testing.assert_allclose(np.asarray(many.loss), np.asarray(one.loss), rtol=1e-5)
        if extra.get("fit_thickness"):
            np.testing.assert_allclose(np.asarray(many.slice_thickness), np.asarray(one.slice_thickness), rtol=1e-5)


def _captured_step(monkeypatch, st0, data, algorithm, **kw):
    """The step object and the first batch of a 2-stream run (its parameters copied)."""
    seen = {}
    call = R._Steps.__call__

    def spy(self, params, opt_state, batch, *, first):
        seen.setdefault("step", (self, jax.tree_util.tree_map(jnp.copy, params), batch))
        return call(self, params, opt_state, batch, first=first)

    monkeypatch.setattr(R._Steps, "__call__", spy)
    _run(st0, data, algorithm, 2, iterations=1, **kw)
    return seen["step"]


@pytest.mark.parametrize("algorithm, slices", [("single_slice", 1), ("multislice", 2)])
def test_parts_sum_to_the_batch_gradient_and_it_is_the_derivative(cases, monkeypatch, algorithm, slices):
    st0, data = cases[slices]
    steps, params, (pieces, wsum) = _captured_step(monkeypatch, st0, data, algorithm)
    assert steps.k == 2 and steps.part_cfg.batch * 2 == steps.cfg.batch
    cfg, c = steps.cfg, steps.consts
    shared, back = jax.vjp(lambda q: R.recon_shared(cfg, q, c), params)
    assert shared["probe"].shape[:2] == (1, 1)  # the probe once per sub-pixel group: made once per step, not per part
    parts = [R.recon_part(steps.part_cfg, shared, *piece, wsum, c) for piece in pieces]
    whole = tuple(jnp.concatenate([p[i] for p in pieces]) for i in range(3))
    summed = jax.tree_util.tree_map(jnp.add, parts[0][0], parts[1][0])
    (through,) = back(summed)
    g, v, _ = R._gradient(cfg, params, *whole, c, wsum)  # the one-stream step's gradient
    for name in ("object", "probe"):
        assert float(jnp.max(jnp.abs(through[name] - g[name]))) <= 1e-5 * float(jnp.max(jnp.abs(g[name])))
    np.testing.assert_allclose(float(parts[0][1] + parts[1][1]), float(v), rtol=1e-5)
    # the gradient (of the loss per electron) against a central difference of the loss along a
    # random direction: jax's gradient of a real function of z is ∂f/∂x − i∂f/∂y, so the
    # directional derivative along dz is Re Σ g·dz
    rng = np.random.default_rng(0)
    scale = float(c["scale"])
    for name in ("object", "probe"):
        dz = jnp.asarray(rng.normal(size=params[name].shape) + 1j * rng.normal(size=params[name].shape), params[name].dtype)
        # a step of 1 % of the parameter's rms (float32: the loss's round-off stays far below)
        eps = 1e-2 * float(jnp.sqrt(jnp.mean(jnp.abs(params[name]) ** 2) / jnp.mean(jnp.abs(dz) ** 2)))

        def loss(t, name=name, dz=dz):
            q = R.recon_shared(cfg, {**params, name: params[name] + t * dz}, c)
            return float(R.recon_part(cfg, q, *whole, wsum, c)[1]) / scale

        fd = (loss(eps) - loss(-eps)) / (2 * eps)
        an = float(jnp.real(jnp.sum(g[name] * dz)))
        assert abs(fd - an) <= 2e-2 * abs(an), (name, fd, an)


def test_step_compiles_once_per_program(cases):
    st0, data = cases[1]
    _, part, update = R._jitted_parts(ONE)
    sizes = lambda: (part._cache_size(), update._cache_size())  # noqa: E731 (jit's cache is per function, shared by the file's tests)
    before = sizes()
    # batch 10, found nowhere else in this file: 25 positions, two full batches and a padded one, twice
    _run(st0, data, "single_slice", 2, iterations=2, batch_size=10)
    assert sizes() == (before[0] + 1, before[1] + 1)
    report: list = []
    _run(st0, data, "single_slice", 2, iterations=2, batch_size=10, seed=9, report=report)  # a second run of the same configuration
    assert sizes() == (before[0] + 1, before[1] + 1)
    assert [r["streams"] for r in report] == [2, 2]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 9), st.integers(1, 300))
def test_streams_divide_the_batch(streams, batch):
    k = R.step_streams(streams, ONE, batch)
    assert 1 <= k <= streams and batch % k == 0 and (k == 1 or batch // k >= 2)
    two = device_mesh(jax.devices()[:2])
    assert R.step_streams(streams, two, batch) == 1  # a mesh already splits the batch


def test_default_and_bad_streams(cases, monkeypatch):
    monkeypatch.setenv("PTYRO_STREAMS", "2")
    assert R.step_streams(None, ONE, 64) == 2
    monkeypatch.setenv("PTYRO_STREAMS", "1")
    assert R.step_streams(None, ONE, 64) == 1
    st0, data = cases[1]
    for bad in (0, -1, "two", 1.5j):
        with pytest.raises(PtyroValueError, match="streams: expected a whole number >= 1"):
            _run(st0, data, "single_slice", bad)


def test_a_mesh_splits_the_work_of_a_step(cases, monkeypatch):
    """On a mesh of 2 devices each device transforms only its own positions (its half of each
    chunk), and the sums are reduced after the chunks, not gathered: XLA's partitioner had
    replicated the chunks, every device computing every position (twice the CPU time of one)."""
    import re

    st0, data = cases[1]
    seen = {}
    call = R._Steps.__call__

    def spy(self, params, opt_state, batch, *, first):
        if "text" not in seen:
            pieces, _ = batch
            seen["text"] = self.step.lower(self.cfg, params, opt_state, *pieces[0], self.consts).compile().as_text()
            seen["cfg"] = self.cfg
        return call(self, params, opt_state, batch, first=first)

    monkeypatch.setattr(R._Steps, "__call__", spy)
    two = device_mesh(jax.devices()[:2])
    reconstruct(data, st0, "single_slice", iterations=1, batch_size=12, progress=False, mesh=two, chunk_size=3, group_shifts=False)
    cfg, text = seen["cfg"], seen["text"]
    assert cfg.ndev == 2
    ffts = re.findall(r"c64\[(\d+),1,24,24\]\S* fft\(", text)  # the waves' transforms: (positions, modes, px, py)
    assert ffts and {int(n) for n in ffts} == {3}, ffts  # 3 positions per device per chunk, not 6
    assert "all-gather" not in text


def test_default_streams_need_enough_work_per_part(monkeypatch):
    """By default a step is split only where each part transforms at least STREAM_MIN_WORK
    pixels (RECON-A's 64 positions of one 128² slice: one per core, up to 2; the demo's 32 of one
    96² slice: one part); a number given, or PTYRO_STREAMS, is taken as it is."""
    from ptyro_core.pipeline import default_streams

    monkeypatch.delenv("PTYRO_STREAMS", raising=False)
    cores = default_streams(ONE)
    one_slice, three_slices = 128 * 128, 3 * 128 * 128
    divisor = lambda k: max(d for d in range(1, k + 1) if 64 % d == 0)  # noqa: E731  (of the batch)
    assert R.step_streams(None, ONE, 64, one_slice) == divisor(min(cores, 2))
    assert R.step_streams(None, ONE, 32, 96 * 96) == 1
    assert R.step_streams(None, ONE, 64, three_slices) == divisor(min(cores, 6))
    assert R.step_streams(None, ONE, 64) == divisor(min(cores, 32))  # no work given: one per core
    assert R.step_streams(2, ONE, 64, one_slice) == 2
    monkeypatch.setenv("PTYRO_STREAMS", "2")
    assert R.step_streams(None, ONE, 64, one_slice) == 2


def test_the_default_counts_a_per_position_shift_as_work(cases, monkeypatch):
    """A position whose probe is shifted by an FFT of its own (no sub-pixel groups: RECON-L,
    refined or distorted positions) transforms twice a grouped one's pixels: with the threshold
    between the two, the grouped run keeps one stream and the per-position run splits."""
    from ptyro_core.pipeline import default_streams

    monkeypatch.delenv("PTYRO_STREAMS", raising=False)
    cores = default_streams(ONE)
    st0, data = cases[1]
    part = 12 // min(cores, 2)  # positions per part at batch 12
    monkeypatch.setattr(R, "STREAM_MIN_WORK", part * 24 * 24 + 1)  # above one slice's work, below two
    grouped, single = [], []
    _run(st0, data, "single_slice", None, report=grouped)
    _run(st0, data, "single_slice", None, report=single, group_shifts=False)
    assert {r["streams"] for r in grouped} == {1}
    assert {r["streams"] for r in single} == {min(cores, 2)}

"""The typed PyTrees: round trips through flatten/unflatten, jit, vmap, grad and tree_map, and
the checks that reject bad input with a message naming the field."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptyro_core import (
    Atoms,
    Dataset4D,
    Grid,
    PotentialSlices,
    ProbeModes,
    PtyroTypeError,
    PtyroValueError,
    ReconState,
    ScanPositions,
    replace,
)

# --------------------------------------------------------------------------- strategies

sizes = st.integers(1, 5)
lengths = st.floats(0.05, 50.0, allow_nan=False, allow_infinity=False)


@st.composite
def grids(draw: st.DrawFn) -> Grid:
    return Grid((draw(st.integers(2, 8)), draw(st.integers(2, 8))), (draw(lengths), draw(lengths)))


def _real(draw: st.DrawFn, shape: tuple, lo: float = -10.0, hi: float = 10.0) -> np.ndarray:
    seed = draw(st.integers(0, 2**31 - 1))
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(np.float32)


def _complex(draw: st.DrawFn, shape: tuple) -> np.ndarray:
    return (_real(draw, shape) + 1j * _real(draw, shape)).astype(np.complex64)


@st.composite
def atoms_st(draw: st.DrawFn) -> Atoms:
    n = draw(sizes)
    numbers = np.asarray(draw(st.lists(st.integers(1, 103), min_size=n, max_size=n)))
    return Atoms(_real(draw, (n, 3)), numbers, cell=(draw(lengths), draw(lengths), draw(lengths)), sigmas=_real(draw, (n,), 0, 0.2))


@st.composite
def slices_st(draw: st.DrawFn) -> PotentialSlices:
    g = draw(grids())
    s = draw(sizes)
    return PotentialSlices(_real(draw, (s, *g.gpts)), _real(draw, (s,), 0.5, 3.0), grid=g)


@st.composite
def probes_st(draw: st.DrawFn) -> ProbeModes:
    g = draw(grids())
    return ProbeModes(_complex(draw, (draw(sizes), *g.gpts)), grid=g, energy=draw(st.floats(1e3, 1e6)))


@st.composite
def scans_st(draw: st.DrawFn) -> ScanPositions:
    rx, ry = draw(sizes), draw(sizes)
    return ScanPositions(_real(draw, (rx * ry, 2)), shape=(rx, ry))


@st.composite
def datasets_st(draw: st.DrawFn) -> Dataset4D:
    g = draw(grids())
    rx, ry = draw(sizes), draw(sizes)
    return Dataset4D(_real(draw, (rx, ry, *g.gpts), 0, 5), _real(draw, (rx * ry, 2)), grid=g, energy=300e3)


@st.composite
def states_st(draw: st.DrawFn) -> ReconState:
    s, m, n = draw(sizes), draw(sizes), draw(sizes)
    return ReconState(
        _complex(draw, (s, 6, 7)),
        _complex(draw, (m, 4, 4)),
        _real(draw, (n, 2)),
        sampling=(draw(lengths), draw(lengths)),
        energy=200e3,
        slice_thickness=_real(draw, (s,), 0.5, 2.0),
        loss=_real(draw, (draw(st.integers(0, 4)),), 0, 1),
        iteration=draw(st.integers(0, 100)),
    )


ANY_TYPE = st.one_of(atoms_st(), slices_st(), probes_st(), scans_st(), datasets_st(), states_st())


def _same(a: object, b: object) -> None:
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --------------------------------------------------------------------------- round trips


@given(ANY_TYPE)
def test_flatten_unflatten_round_trip(obj: object) -> None:
    leaves, treedef = jax.tree_util.tree_flatten(obj)
    back = jax.tree_util.tree_unflatten(treedef, leaves)
    assert type(back) is type(obj)
    _same(obj, back)
    # static metadata sits in the treedef, not the leaves
    assert all(hasattr(x, "shape") for x in leaves)


@given(ANY_TYPE)
def test_jit_identity_round_trip(obj: object) -> None:
    _same(obj, jax.jit(lambda o: o)(obj))


@given(ANY_TYPE)
def test_vmap_over_leading_axis(obj: object) -> None:
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), obj)
    out = jax.vmap(lambda o: jax.tree_util.tree_map(lambda x: x * 2 if jnp.issubdtype(x.dtype, jnp.inexact) else x, o))(stacked)
    assert type(out) is type(obj)
    for x, y in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(obj)):
        expect = y * 2 if jnp.issubdtype(y.dtype, jnp.inexact) else y
        np.testing.assert_allclose(np.asarray(x[1]), np.asarray(expect), rtol=1e-6)


@given(ANY_TYPE)
def test_tree_map_keeps_type_and_static_fields(obj: object) -> None:
    out = jax.tree_util.tree_map(lambda x: x, obj)
    assert type(out) is type(obj)
    for name in type(obj).__ptyro_static__:
        assert getattr(out, name) == getattr(obj, name)


def test_grad_flows_through_fields() -> None:
    st_ = ReconState(np.ones((1, 4, 4)), np.ones((1, 2, 2)), np.zeros((3, 2)), sampling=0.5, energy=2e5)

    def f(s: ReconState) -> jax.Array:
        return jnp.sum(jnp.abs(s.object) ** 2) + jnp.sum(s.positions**2) + jnp.sum(s.slice_thickness)

    g = jax.grad(f, allow_int=True)(st_)
    assert isinstance(g, ReconState)
    np.testing.assert_allclose(np.asarray(g.slice_thickness), [1.0])
    np.testing.assert_allclose(np.abs(np.asarray(g.object)), 2.0)


def test_static_fields_are_hashable_and_retrace_on_change() -> None:
    traces = []

    @jax.jit
    def f(p: PotentialSlices) -> jax.Array:
        traces.append(p.grid)
        return p.array.sum()

    a = PotentialSlices(np.ones((1, 4, 4)), 1.0, grid=Grid((4, 4), 0.5))
    f(a)
    f(replace(a, array=a.array * 2))
    assert len(traces) == 1
    f(PotentialSlices(np.ones((1, 4, 4)), 1.0, grid=Grid((4, 4), 0.25)))
    assert len(traces) == 2


def test_replace_unknown_field_is_an_error() -> None:
    a = ScanPositions(np.zeros((2, 2)))
    with pytest.raises(TypeError, match="no field"):
        replace(a, nonsense=1)


def test_grid_helpers() -> None:
    g = Grid.from_extent((31.24, 31.24), gpts=256)
    assert g.gpts == (256, 256)
    assert g.sampling[0] == pytest.approx(31.24 / 256)
    assert g.reciprocal_sampling[0] == pytest.approx(1 / 31.24)
    g2 = Grid.from_extent(10.0, sampling=0.05)
    assert g2.gpts == (200, 200)
    kx, ky = g.frequencies()
    assert kx.shape == (256, 1) and ky.shape == (1, 256)
    assert float(kx[1, 0]) == pytest.approx(1 / 31.24, rel=1e-5)


def test_scan_raster_excludes_end() -> None:
    s = ScanPositions.raster((0.0, 0.0), (4.0, 2.0), (4, 2))
    assert s.shape == (4, 2)
    np.testing.assert_allclose(np.asarray(s.positions[:3]), [[0, 0], [0, 1], [1, 0]])


def test_probe_occupancies() -> None:
    arr = np.zeros((2, 4, 4), np.complex64)
    arr[0, 0, 0] = np.sqrt(0.75)
    arr[1, 1, 1] = np.sqrt(0.25)
    p = ProbeModes(arr, grid=Grid((4, 4), 0.5), energy=300e3)
    np.testing.assert_allclose(np.asarray(p.occupancies), [0.75, 0.25], rtol=1e-6)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: Atoms(np.zeros((3, 2)), [6, 6, 8], cell=(3, 3, 3)), PtyroTypeError, r"Atoms\.positions: expected Float\[Array, 'n 3'\], got float32\[3, 2\]"),
        (lambda: Atoms(np.zeros((3, 3)), [6, 6], cell=(3, 3, 3)), PtyroTypeError, r"Atoms: shared dimensions disagree.*numbers=int32\[2\]"),
        (lambda: Atoms(np.zeros((1, 3)), [104], cell=(3, 3, 3)), PtyroValueError, r"Atoms\.numbers: expected values <= 103, got 104"),
        (lambda: Atoms(np.zeros((1, 3)), [0], cell=(3, 3, 3)), PtyroValueError, r"Atoms\.numbers: expected values >= 1, got 0"),
        (lambda: Atoms(np.zeros((1, 3)), [6.5], cell=(3, 3, 3)), PtyroTypeError, r"Atoms\.numbers: expected integers"),
        (lambda: Atoms(np.full((1, 3), np.nan), [6], cell=(3, 3, 3)), PtyroValueError, r"Atoms\.positions: expected finite values, found 3 NaN"),
        (lambda: Atoms(np.zeros((1, 3)), [6], cell=(3, -1, 3)), PtyroValueError, r"Atoms\.cell: expected a positive finite number, got -1"),
        (lambda: Atoms(np.zeros((1, 3)), [6], cell=(3, 3, 3), sigmas=[-0.1]), PtyroValueError, r"Atoms\.sigmas: expected values >= 0"),
        (lambda: Grid((0, 4), 0.1), PtyroValueError, r"Grid\.gpts: expected positive integers"),
        (lambda: Grid((4, 4), (0.1, -0.1)), PtyroValueError, r"Grid\.sampling: expected a positive finite number, got -0\.1"),
        (lambda: Grid((4, 4, 4), 0.1), PtyroValueError, r"Grid\.gpts: expected a pair"),
        (lambda: PotentialSlices(np.ones((2, 4, 4)), [1.0, 0.0], grid=Grid((4, 4), 0.5)), PtyroValueError, r"PotentialSlices\.slice_thickness: expected values > 0"),
        (lambda: PotentialSlices(np.ones((2, 4, 5)), 1.0, grid=Grid((4, 4), 0.5)), PtyroValueError, r"PotentialSlices\.array: last two axes \(4, 5\) do not match grid\.gpts \(4, 4\)"),
        (lambda: PotentialSlices(np.ones((4, 4)), 1.0, grid=Grid((4, 4), 0.5)), PtyroTypeError, r"PotentialSlices\.array: expected Float\[Array, 's nx ny'\]"),
        (lambda: PotentialSlices(np.ones((1, 4, 4)) * 1j, 1.0, grid=Grid((4, 4), 0.5)), PtyroTypeError, r"PotentialSlices\.array: expected a real array"),
        (lambda: ProbeModes(np.ones((1, 4, 4)), grid=Grid((4, 4), 0.5), energy=-200e3), PtyroValueError, r"ProbeModes\.energy: expected a positive finite number, got -200000"),
        (lambda: ProbeModes(np.ones((1, 4, 4)), grid="grid", energy=200e3), PtyroTypeError, r"ProbeModes\.grid: expected a Grid"),
        (lambda: ScanPositions(np.zeros((6, 2)), shape=(2, 2)), PtyroValueError, r"ScanPositions\.shape: \(2, 2\) holds 4 positions, but positions has 6"),
        (lambda: ScanPositions(np.zeros((6, 3))), PtyroTypeError, r"ScanPositions\.positions: expected Float\[Array, 'n 2'\]"),
        (lambda: Dataset4D(np.ones((2, 2, 4, 4)), np.zeros((3, 2)), grid=Grid((4, 4), 0.5), energy=3e5), PtyroValueError, r"Dataset4D\.positions: expected Rx\*Ry = 4 positions"),
        (lambda: Dataset4D(-np.ones((1, 1, 4, 4)), np.zeros((1, 2)), grid=Grid((4, 4), 0.5), energy=3e5), PtyroValueError, r"Dataset4D\.array: expected values >= 0"),
        (lambda: Dataset4D(np.ones((2, 4, 4)), np.zeros((2, 2)), grid=Grid((4, 4), 0.5), energy=3e5), PtyroTypeError, r"Dataset4D\.array: expected Real\[Array \| ndarray, 'rx ry qx qy'\], got float32\[2, 4, 4\]"),
        (lambda: ReconState(np.ones((2, 4, 4)), np.ones((1, 2, 2)), np.zeros((3, 2)), sampling=0.5, energy=2e5, slice_thickness=[1.0]), PtyroTypeError, r"ReconState: shared dimensions disagree"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(build: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        build()  # type: ignore[operator]


def test_checks_skip_tracers_but_run_for_users() -> None:
    # Constructing inside jit with traced values works (checks that need values are skipped) ...
    out = jax.jit(lambda x: ScanPositions(x).positions * 2)(jnp.ones((3, 2)))
    np.testing.assert_allclose(np.asarray(out), 2.0)
    # ... while the same NaN from a user is refused.
    with pytest.raises(PtyroValueError):
        ScanPositions(np.full((3, 2), np.nan))


def test_float64_is_kept_when_enabled() -> None:
    with jax.enable_x64(True):
        a = Atoms(np.zeros((1, 3), np.float64), [6], cell=(1, 1, 1))
        assert a.positions.dtype == jnp.float64
        p = ProbeModes(np.ones((1, 2, 2), np.float64), grid=Grid((2, 2), 1.0), energy=1e5)
        assert p.array.dtype == jnp.complex128

"""Testing helpers for ptyrodactyl and for third-party plugin authors.

Loaded as a pytest plugin (``-p ptyro_core.testing``, or ``pytest_plugins = ["ptyro_core.testing"]``
in a conftest) it provides the fixtures

- ``isolated_registry``: an empty :class:`~ptyro_core.registry.Registry` (no entry points) for
  runtime registration;
- ``fake_distribution``: a factory that writes a real installed distribution (a
  ``<dist>-<ver>.dist-info`` with ``METADATA`` and ``entry_points.txt``, plus its module) into a
  temporary folder on ``sys.path`` and resets the process-wide registry, so discovery runs through
  genuine entry points without installing anything;
- ``x64``: float64 enabled for one test (gradient checks), the previous setting restored.

:func:`check_conformance` checks that a component works under ``jit``, ``vmap`` and ``grad``
with small inputs of its kind.
"""

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ptyro_core.hookspecs import KINDS
from ptyro_core.protocols import Optimizer, check_component
from ptyro_core.registry import Registry, reset_registry
from ptyro_core.types import Atoms, Dataset4D, Grid, PotentialSlices, ProbeModes, ReconState

__all__ = ["write_fake_distribution", "check_conformance", "sample_grid"]


# --------------------------------------------------------------------------- fake distributions


def write_fake_distribution(
    root: Path,
    dist: str,
    source: str,
    *,
    module: str | None = None,
    version: str = "0.1.0",
    entry_point: str | None = None,
) -> Path:
    """Write distribution ``dist`` with one module (``source``) and its ``ptyrodactyl`` entry
    point into ``root`` (which must be, or be put, on ``sys.path``)."""
    module = module or dist.replace("-", "_")
    entry_point = entry_point or dist
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[ptyrodactyl]\n{entry_point} = {module}\n")
    return info


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the fixtures
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def isolated_registry() -> Registry:
        """An empty registry that discovers no entry points."""
        return Registry(entry_points=False)

    @pytest.fixture
    def x64() -> Iterator[None]:
        """Enable float64 for one test (gradient checks) and restore the previous setting."""
        with jax.enable_x64(True):
            yield

    @pytest.fixture
    def fake_distribution(tmp_path: Path, monkeypatch: Any) -> Iterator[Callable[..., Path]]:
        """Factory: ``fake_distribution(dist, source, **kw)`` writes an installed distribution on
        ``sys.path`` and resets the process-wide registry."""
        root = tmp_path / "site"
        root.mkdir()
        monkeypatch.syspath_prepend(str(root))
        modules: list[str] = []

        def make(dist: str, source: str, **kw: Any) -> Path:
            modules.append(kw.get("module") or dist.replace("-", "_"))
            info = write_fake_distribution(root, dist, source, **kw)
            importlib.invalidate_caches()
            reset_registry()
            return info

        yield make
        for m in modules:
            sys.modules.pop(m, None)
        reset_registry()


# --------------------------------------------------------------------------- conformance


def sample_grid() -> Grid:
    return Grid((32, 32), (0.2, 0.2))


def _allfinite(tree: Any) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(tree))


def _close(a: Any, b: Any, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol) for x, y in zip(la, lb))


def check_conformance(kind: str, component: Any, **options: Any) -> None:
    """Check that ``component`` behaves as a ``kind`` under jit, vmap and grad.

    Raises AssertionError naming the failing transformation. ``options`` are passed to the
    component (e.g. ``semiangle_cutoff`` for a probe, ``slice_thickness`` for a potential).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    check_component(kind, component)
    globals()[f"_conform_{kind}"](component, **options)


def _conform_backend(backend: Any, **options: Any) -> None:
    """A far-field back end says whether it can run (outside jit); where it can, it must match
    :func:`ptyro_simul.multislice.fresnel_far_field` under jit and vmap (ptyro-native's tests
    check gradients against it)."""
    assert callable(getattr(backend, "unavailable", None)), "backend: no unavailable(dtype, windowed) method"


def _conform_potential(potential: Any, *, slice_thickness: float = 2.0, **options: Any) -> None:
    grid = Grid((32, 32), (0.25, 0.25))
    atoms = Atoms(np.array([[2.0, 3.0, 1.0], [5.0, 4.0, 3.0]], np.float32), np.array([6, 14]), cell=(8.0, 8.0, 4.0))
    out = potential(atoms, grid, slice_thickness=slice_thickness, **options)
    assert isinstance(out, PotentialSlices), f"potential returned {type(out).__name__}, expected PotentialSlices"
    assert out.grid == grid, f"potential returned grid {out.grid}, expected {grid}"

    def f(pos: Any) -> Any:
        return potential(_with_positions(atoms, pos), grid, slice_thickness=slice_thickness, **options).array

    jitted = jax.jit(f)(atoms.positions)
    assert _close(jitted, out.array, rtol=1e-3, atol=1e-3 * float(jnp.max(jnp.abs(out.array)))), "potential: jit result differs from eager"
    stacked = jnp.stack([atoms.positions, atoms.positions + 0.5])
    vm = jax.vmap(f)(stacked)
    assert vm.shape == (2,) + out.array.shape, f"potential: vmap gave shape {vm.shape}"
    g = jax.grad(lambda p: jnp.sum(f(p) ** 2))(atoms.positions)
    assert _allfinite(g), "potential: gradient with respect to positions is not finite"


def _with_positions(atoms: Atoms, pos: Any) -> Atoms:
    from ptyro_core._pytree import replace

    return replace(atoms, positions=pos)


def _conform_propagator(propagator: Any, **options: Any) -> None:
    grid = sample_grid()
    x, y = grid.coordinates()
    wave = jnp.exp(-((x - 3.2) ** 2 + (y - 3.2) ** 2) / 2.0).astype(jnp.complex64)
    wave = wave / jnp.sqrt(jnp.sum(jnp.abs(wave) ** 2))
    energy = 200e3
    out = propagator(wave, 10.0, grid, energy, **options)
    assert out.shape == wave.shape, f"propagator: output shape {out.shape}, expected {wave.shape}"
    jitted = jax.jit(lambda w, dz: propagator(w, dz, grid, energy, **options))(wave, 10.0)
    assert _close(jitted, out), "propagator: jit result differs from eager"
    vm = jax.vmap(lambda w: propagator(w, 10.0, grid, energy, **options))(jnp.stack([wave, 2 * wave]))
    assert _close(vm[1], 2 * out, rtol=1e-4, atol=1e-5), "propagator: vmap over waves is not consistent"
    g = jax.grad(lambda dz: jnp.sum(jnp.abs(propagator(wave, dz, grid, energy, **options)[:10]) ** 2))(10.0)
    assert _allfinite(g), "propagator: gradient with respect to dz is not finite"


def _conform_probe(probe: Any, *, semiangle_cutoff: float = 20.0, **options: Any) -> None:
    grid = Grid((64, 64), (0.1, 0.1))
    out = probe(grid, 200e3, semiangle_cutoff=semiangle_cutoff, **options)
    assert isinstance(out, ProbeModes), f"probe returned {type(out).__name__}, expected ProbeModes"
    norm = float(jnp.sum(jnp.abs(out.array) ** 2))
    assert abs(norm - 1.0) < 1e-3, f"probe: total intensity {norm}, expected 1"

    def f(c10: Any) -> Any:
        return probe(grid, 200e3, semiangle_cutoff=semiangle_cutoff, aberrations={"C10": c10}, **options).array

    assert _close(jax.jit(f)(50.0), f(50.0), rtol=1e-3, atol=1e-5), "probe: jit result differs from eager"
    vm = jax.vmap(f)(jnp.array([0.0, 50.0]))
    assert vm.shape[0] == 2, "probe: vmap over defocus failed"
    g = jax.grad(lambda c: jnp.sum(jnp.abs(f(c)[..., 32, 32]) ** 2))(50.0)
    assert _allfinite(g), "probe: gradient with respect to C10 is not finite"


def _conform_loss(loss: Any, **options: Any) -> None:
    key = jax.random.PRNGKey(0)
    measured = jax.random.uniform(key, (4, 16, 16), minval=0.1, maxval=2.0)
    predicted = measured * 1.3
    val = loss(predicted, measured, **options)
    assert jnp.shape(val) == (), f"loss: expected a scalar, got shape {jnp.shape(val)}"
    assert _close(jax.jit(lambda p: loss(p, measured, **options))(predicted), val), "loss: jit result differs"
    assert float(loss(measured, measured, **options)) <= float(val), "loss: perfect prediction is not better than a wrong one"
    vm = jax.vmap(lambda p, m: loss(p[None], m[None], **options))(predicted, measured)
    assert vm.shape == (4,), "loss: vmap over patterns failed"
    g = jax.grad(lambda p: loss(p, measured, **options))(predicted)
    assert _allfinite(g) and float(jnp.sum(jnp.abs(g))) > 0, "loss: gradient is not finite or vanishes"


def _conform_optimizer(factory: Any, *, learning_rate: float = 0.1, steps: int = 50, **options: Any) -> None:
    opt = factory(learning_rate, **options)
    assert isinstance(opt, Optimizer) or (hasattr(opt, "init") and hasattr(opt, "update")), "optimizer: factory must return an Optimizer(init, update)"
    target = {"z": jnp.array([1.0 + 2.0j, -0.5 + 0.25j], jnp.complex64), "r": jnp.array([0.3, -1.0], jnp.float32)}
    params = jax.tree_util.tree_map(jnp.zeros_like, target)

    def loss(p: Any) -> Any:
        return jnp.sum(jnp.abs(p["z"] - target["z"]) ** 2) + jnp.sum((p["r"] - target["r"]) ** 2)

    state = opt.init(params)

    @jax.jit
    def step(p: Any, s: Any) -> Any:
        g = jax.grad(loss)(p)
        upd, s = opt.update(g, s, p)
        return jax.tree_util.tree_map(lambda a, b: a + b, p, upd), s

    l0 = float(loss(params))
    for _ in range(steps):
        params, state = step(params, state)
    assert float(loss(params)) < 0.5 * l0, f"optimizer: loss went from {l0} to {float(loss(params))} in {steps} steps on a complex quadratic"


def _conform_reconstruction(reconstruct: Any, **options: Any) -> None:
    grid = Grid((16, 16), (0.2, 0.2))
    x, y = grid.coordinates()
    probe = jnp.exp(-((x - 1.6) ** 2 + (y - 1.6) ** 2) / 0.5).astype(jnp.complex64)
    probe = probe / jnp.sqrt(jnp.sum(jnp.abs(probe) ** 2))
    pos = np.stack(np.meshgrid(np.arange(2) * 0.8 + 1.6, np.arange(2) * 0.8 + 1.6, indexing="ij"), -1).reshape(-1, 2)
    patterns = jnp.broadcast_to(jnp.fft.fftshift(jnp.abs(jnp.fft.fft2(probe, norm="ortho")) ** 2), (2, 2, 16, 16))
    data = Dataset4D(patterns, pos.astype(np.float32), grid=grid, energy=200e3)
    state = ReconState(jnp.ones((1, 24, 24), jnp.complex64), probe[None], pos.astype(np.float32), sampling=grid.sampling, energy=200e3)
    out = reconstruct(data, state, iterations=1, batch_size=2, **options)
    assert isinstance(out, ReconState), f"reconstruction returned {type(out).__name__}, expected ReconState"
    assert _allfinite(out.object), "reconstruction: object is not finite after one iteration"


def _conform_simulator(simulator: Any, **options: Any) -> None:
    grid = Grid((32, 32), (0.25, 0.25))
    x, y = grid.coordinates()
    v = 20.0 * jnp.exp(-((x - 4.0) ** 2 + (y - 4.0) ** 2) / 0.3)
    potential = PotentialSlices(jnp.stack([v, 0.5 * v]), jnp.array([2.0, 2.0]), grid=grid)
    r2 = (x - 4.0) ** 2 + (y - 4.0) ** 2
    probe_arr = jnp.exp(-r2 / 1.0).astype(jnp.complex64)
    probe = ProbeModes(probe_arr / jnp.sqrt(jnp.sum(jnp.abs(probe_arr) ** 2)), grid=grid, energy=200e3)
    fn = simulator(potential, probe, **options)
    pos = jnp.array([[3.0, 4.0], [4.0, 4.0], [4.5, 3.5]], jnp.float32)
    out = fn(pos)
    assert out.shape == (3, 32, 32), f"simulator: fn(positions) returned shape {out.shape}, expected (3, 32, 32)"
    assert _allfinite(out) and float(jnp.min(out)) >= 0, "simulator: intensities must be finite and non-negative"
    total = float(jnp.sum(out[1]))
    assert 0.5 < total <= 1.0 + 1e-3, f"simulator: a pattern sums to {total}, expected about 1 (unitary FFT, normalised probe)"
    assert _close(jax.jit(fn)(pos), out, rtol=1e-3, atol=1e-6), "simulator: jit result differs from eager"
    g = jax.grad(lambda p: jnp.sum(fn(p)[:, :4, :4]))(pos)
    assert _allfinite(g), "simulator: gradient with respect to positions is not finite"

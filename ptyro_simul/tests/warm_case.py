"""The small 4D-STEM case of test_simul_warm_start.py, as a script: ``python warm_case.py OUT.npz``
writes its signals (and the JAX version and back end) to OUT.npz; ``python warm_case.py`` prints
the names of the functions JAX traced while it ran and the number run untraced from the
executable cache (when one is installed first, as the test's second process does).

The reference file ``data/warm_reference.npz`` was written by this script on the sources before
the simulation's jitted functions became top-level ones (commit 28e0a64), so the test checks that
the change left every value bit for bit as it was."""

import sys

import numpy as np


def simulate() -> dict[str, np.ndarray]:
    """SrTiO3 [001], 1 x 1 x 2 cells on 32 x 32 px, Kirkland (Fourier, infinite projection), 4
    slices, 200 keV 20 mrad probe with 30 Å defocus, 3 x 2 positions in two batches of 3, pixelated + two annular
    detectors, multislice with the Fresnel propagator (the demo's simulation path, smaller), on
    one device (the suite's two split the batches differently: an annular sum then differs in
    its last bit)."""
    import jax

    from ptyro_core import Grid
    from ptyro_core.pipeline import device_mesh
    from ptyro_simul.detectors import AnnularDetector, PixelatedDetector
    from ptyro_simul.potentials import kirkland
    from ptyro_simul.probe import aberrated_probe
    from ptyro_simul.stem import simulate_4dstem
    from ptyro_simul.structures import build_crystal

    atoms = build_crystal("SrTiO3", repeat=(1, 1, 2))
    grid = Grid.from_extent(atoms.cell[:2], gpts=(32, 32))
    pot = kirkland(atoms, grid, slice_thickness=atoms.cell[2] / 4)
    probe = aberrated_probe(grid, 200e3, semiangle_cutoff=20.0, aberrations={"C10": -30.0})
    xs, ys = np.meshgrid(np.linspace(0.5, 2.5, 3), np.linspace(1.0, 2.0, 2), indexing="ij")
    positions = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    dets = [PixelatedDetector(), AnnularDetector(0.0, 10.0, name="bf"), AnnularDetector(25.0, 55.0, name="adf")]
    out = simulate_4dstem(
        pot, probe, positions, detectors=dets, batch_size=3, progress=False, mesh=device_mesh(jax.devices()[:1]), propagator="fresnel", backend="xla"
    )
    return {"potential": np.asarray(pot.array), **out}


if __name__ == "__main__":
    if len(sys.argv) > 1:
        import jax

        signals = simulate()
        np.savez_compressed(sys.argv[1], jax_version=jax.__version__, backend=jax.default_backend(), **signals)
    else:
        import jax.monitoring as mon

        traced: list[str] = []
        mon.register_event_duration_secs_listener(
            lambda name, secs, **kw: traced.append(kw.get("fun_name", "")) if name.endswith("jaxpr_trace_duration") else None
        )
        signals = simulate()
        from ptyro_core import exec_cache

        print(" ".join(sorted(set(traced))) or "-", exec_cache.stats()["untraced"])

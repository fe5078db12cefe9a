"""Ptyrodactyl adapter for SIM-A / SIM-B (runs in the workspace venv).

    python ours_sim.py <case_dir> <out_dir> [ptyro|jaxplain|floor]

``ptyro``    the library: ``ptyro_simul.stem.simulate_4dstem`` on ``PotentialSlices`` built from
             the shared slices and the library's aberrated probe.
``jaxplain`` a minimal jitted full-grid multislice written here (the benchmark's own baseline:
             what a plain JAX implementation gets, with the same FFT count as the library).
``jaxplain-taper`` the same with abTEM's band-limit convention (cosine taper 0.01/dx Å⁻¹ wide
             at the edge of the 2/3-Nyquist aperture instead of a hard edge): an accuracy-only
             run showing that the remaining difference from abTEM is that convention alone.
``ptyro-window [N]`` the library with ``window=(N, N)`` (default 128; the runner uses 160): each
             probe propagated in an N x N crop of the periodic potential around it (patterns
             N x N, coarser detector pixels); "smarter than the full-grid floor", its accuracy
             cost measured against abTEM.
``floor``    only the FFTs the plain full-grid algorithm needs: 2 per slice per position, jitted,
             in cache-sized chunks of positions (its first call times every chunk size up to
             4 MiB of waves and keeps the fastest: 1 or 2 positions at 256² on this machine),
             with the batches in as many concurrent streams as the library runs (one per core
             on one CPU device; XLA runs each FFT on one thread).
"""

import os
import sys

from _proto import load_meta, serve, timed_import

MODE = sys.argv[3] if len(sys.argv) > 3 else "ptyro"
WINDOW = int(sys.argv[4]) if len(sys.argv) > 4 else 128

with timed_import():
    import numpy as np
    import jax
    import jax.numpy as jnp

    import ptyro_core
    from ptyro_core import Grid, PotentialSlices, ScanPositions
    from ptyro_simul.probe import aberrated_probe


def _sigma(energy):
    from ptyro_simul.constants import energy2sigma

    return energy2sigma(energy)


class Worker:
    def __init__(self, case_dir, out_dir):
        self.meta = m = load_meta(case_dir)
        self.grid = Grid(tuple(m["gpts"]), tuple(m["sampling"]))
        self.slices = [np.load(os.path.join(case_dir, f)).astype(np.float32) for f in m["potential_files"]]
        self.probe = aberrated_probe(self.grid, m["energy"], semiangle_cutoff=m["semiangle_cutoff"])
        self.scan = ScanPositions.raster(m["scan_start"], m["scan_end"], m["scan_gpts"])
        self.batch_size = int(m.get("batch_size", 64))
        self.result = None
        self.window = None
        if MODE == "ptyro-window":
            self.window = (WINDOW, WINDOW)
            self.probe = aberrated_probe(Grid(self.window, self.grid.sampling), m["energy"], semiangle_cutoff=m["semiangle_cutoff"])
        if MODE in ("ptyro", "ptyro-window"):
            from ptyro_simul import stem
            from ptyro_simul.detectors import PixelatedDetector

            self.stem, self.PixelatedDetector = stem, PixelatedDetector
            self.potentials = [PotentialSlices(s, m["slice_thickness"], self.grid) for s in self.slices]
        elif MODE in ("jaxplain", "jaxplain-taper"):
            self._plain = self._make_plain(taper=0.01 if MODE == "jaxplain-taper" else 0.0)
        elif MODE == "floor":
            self._make_floor()
        else:
            raise ValueError(f"mode: expected ptyro, ptyro-window, jaxplain, jaxplain-taper or floor, got {MODE!r}")

    # ----------------------------------------------------------------- library
    def _run_ptyro_all(self):
        # frozen phonons: the library takes the list of configurations and averages them itself
        pot = self.potentials[0] if len(self.potentials) == 1 else self.potentials
        opts = {} if self.window is None else {"window": self.window}
        out = self.stem.simulate_4dstem(
            pot, self.probe, self.scan, detectors=[self.PixelatedDetector()], batch_size=self.batch_size, progress=False, **opts
        )  # fmt: skip
        return np.asarray(out["pixelated"])

    # ----------------------------------------------------------------- plain JAX baseline
    def _make_plain(self, taper=0.0):
        m, g = self.meta, self.grid
        from ptyro_simul.constants import energy2wavelength
        from ptyro_simul.propagator import antialias_aperture, antialias_cutoff

        kx, ky = g.frequencies()
        k = jnp.sqrt(kx**2 + ky**2)
        if taper > 0:  # abTEM's antialias aperture: cosine roll-off over taper/dx below the cutoff
            cut, w = antialias_cutoff(g), taper / max(g.sampling)
            ap = 0.5 * (1 + jnp.cos(jnp.pi * (k - cut + w) / w))
            ap = jnp.where(k > cut, 0.0, jnp.where(k > cut - w, ap, 1.0)).astype(jnp.float32)
        else:
            ap = antialias_aperture(g)
        lam = energy2wavelength(m["energy"])
        kernel = (jnp.exp(-1j * jnp.pi * lam * m["slice_thickness"] * k**2) * ap).astype(jnp.complex64)
        sigma = _sigma(m["energy"])
        pk = jnp.fft.fft2(jnp.fft.ifftshift(self.probe.array[0]), norm="ortho")  # probe at origin

        @jax.jit
        def batch(pos, trans):
            # written out on purpose: the plain baseline does not use the library's helpers (ptyro_core.conventions)
            ramp = jnp.exp(-2j * jnp.pi * (kx[None] * pos[:, 0, None, None] + ky[None] * pos[:, 1, None, None]))
            psi = jnp.fft.ifft2(pk[None] * ramp, norm="ortho")

            def step(w, t):
                w = jnp.fft.ifft2(jnp.fft.fft2(w * t[None], norm="ortho") * kernel[None], norm="ortho")
                return w, None

            psi, _ = jax.lax.scan(step, psi, trans)
            return jnp.fft.fftshift(jnp.abs(jnp.fft.fft2(psi, norm="ortho")) ** 2, axes=(-2, -1))

        # the transmission functions are band-limited too (as abTEM does): without it t·ψ aliases
        # frequencies beyond Nyquist back into the kept 2/3 band (+20% ADF intensity here).
        self._trans = [
            jnp.fft.ifft2(jnp.fft.fft2(jnp.exp(1j * sigma * jnp.asarray(s))) * ap).astype(jnp.complex64) for s in self.slices
        ]
        return batch

    def _run_plain(self, k):
        pos = np.asarray(self.scan.positions)
        out = []
        b = self.batch_size
        for s in range(0, len(pos), b):
            chunk = pos[s : s + b]
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], b - n, 0)])
            out.append(np.asarray(self._plain(jnp.asarray(chunk), self._trans[k]))[:n])
        return np.concatenate(out).reshape(tuple(self.meta["scan_gpts"]) + tuple(self.meta["gpts"]))

    # ----------------------------------------------------------------- FFT floor
    def _make_floor(self):
        # 2 FFTs per slice per position; _floor.FFTFloor keeps the fastest chunk size and runs
        # the batches in as many streams as the library
        from _floor import FFTFloor

        self._floor = FFTFloor(self.meta["gpts"], self.slices[0].shape[0], len(self.scan), self.batch_size)

    def _run_floor(self, k):
        self._floor.run()
        return None

    def run(self):
        if MODE in ("ptyro", "ptyro-window"):
            self.result = self._run_ptyro_all()
            return {}
        fn = {"jaxplain": self._run_plain, "jaxplain-taper": self._run_plain, "floor": self._run_floor}[MODE]
        total = None
        for k in range(len(self.slices)):
            arr = fn(k)
            if arr is not None:
                total = arr if total is None else total + arr
        self.result = None if total is None else total / len(self.slices)
        return {}

    def finish(self, out_dir):
        if self.result is not None:
            np.save(os.path.join(out_dir, "data4d.npy"), np.asarray(self.result, np.float32))
        info = {"version": ptyro_core.__version__, "jax": jax.__version__, "mode": MODE}
        if MODE in ("ptyro", "ptyro-window"):
            from ptyro_simul.backend import resolve_backend

            info["native"] = resolve_backend("auto", jnp.complex64, windowed=self.window is not None, kernel=True)[0] == "native"
        if MODE == "floor":
            info.update(self._floor.info())
        if self.window is not None:
            info["pattern_extent"] = [self.window[0] * self.grid.sampling[0], self.window[1] * self.grid.sampling[1]]
            info["window"] = self.window[0]
        return info


if __name__ == "__main__":
    serve(Worker)

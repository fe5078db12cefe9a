"""The FFT floor shared by the SIM and RECON floor workers (workspace venv): only the FFTs a
computation must do, jitted, in cache-sized chunks of positions (the first call times every chunk
size dividing the batch, up to 4 MiB of waves, three times interleaved, and keeps the fastest),
with the batches in as many concurrent streams as the library runs
(``ptyro_core.pipeline.default_streams``: one per core on one CPU device, since XLA runs each FFT
of a CPU program on one thread)."""

import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np


class FFTFloor:
    """``pairs`` FFT + inverse FFT pairs per position over ``positions`` positions of waves of
    shape ``gpts`` (complex64), ``batch`` positions per jitted call."""

    def __init__(self, gpts, pairs: int, positions: int, batch: int):
        self.positions, self.batch, self.pairs = int(positions), int(batch), int(pairs)
        per = int(np.prod(gpts)) * 8
        b = self.batch
        sizes = [k for k in range(1, b + 1) if b % k == 0 and k * per <= max(4 << 20, per)]

        def make(c):
            def chunk(psi):
                def step(w, _):
                    return jnp.fft.ifft2(jnp.fft.fft2(w)), None

                w, _ = jax.lax.scan(step, psi, None, length=self.pairs)
                return w

            @jax.jit
            def run(psi):
                return jax.lax.map(chunk, psi.reshape((b // c, c) + psi.shape[1:])).reshape(psi.shape)

            return run

        self.psi = jnp.ones((b,) + tuple(gpts), jnp.complex64)
        self.candidates = {c: make(c) for c in sizes}
        self.chunk = None
        self.trials: dict = {}

    def _batches(self, fn, batches: int | None = None) -> None:
        from ptyro_core.pipeline import default_streams, device_mesh

        def one(_):
            jax.block_until_ready(fn(self.psi))  # nothing kept: the outputs are not the point

        n = -(-self.positions // self.batch) if batches is None else batches
        with ThreadPoolExecutor(max_workers=default_streams(device_mesh())) as pool:
            list(pool.map(one, range(n)))

    def run(self) -> None:
        """One sweep over the positions; the first call compiles every chunk size and times each
        on up to 16 batches, three times interleaved, then keeps the fastest."""
        if self.chunk is None:
            trial = min(16, -(-self.positions // self.batch))
            for fn in self.candidates.values():
                self._batches(fn, 2)
            # the fastest of three interleaved trials per chunk size: with one trial each, a moment
            # of load elsewhere could pick a slower size for every round that follows (RECON-A:
            # chunks of 8 positions 0.065 s a trial, of 16 0.071 s)
            best = {c: float("inf") for c in self.candidates}
            for _ in range(3):
                for c, fn in self.candidates.items():
                    t0 = time.perf_counter()
                    self._batches(fn, trial)
                    best[c] = min(best[c], time.perf_counter() - t0)
            self.chunk = min(best, key=best.get)
            self.trials = {str(c): round(t, 4) for c, t in best.items()}
        self._batches(self.candidates[self.chunk])

    def info(self) -> dict:
        return {"chunk": self.chunk, "chunk_trials_s": self.trials, "fft_pairs_per_position": self.pairs}

"""Where SIM-A's full-grid time goes beyond the FFT floor: the multislice slice loop taken apart.

    .venv/bin/python benchmarks/profile_sim.py [--rounds 15] [--chunk 8] [--size 256] [--slices 20]

Times four jitted loops over ``slices`` slices on a chunk of ``chunk`` waves of ``size``²
complex64 (the library's cache-sized chunk at SIM-A's size), interleaved round by round, one
stream, and prints each median and its ratio to the FFT-only loop:

- ``fft only``    w ← IFFT(FFT(w)): the floor's loop (2 FFTs per slice per position);
- ``+ t``         w ← IFFT(FFT(t·w)): with the multiplication by the transmission function;
- ``+ k``         w ← IFFT(k·FFT(w)): with the multiplication by the propagator kernel;
- ``+ t + k``     w ← IFFT(k·FFT(t·w)): the multislice step the library runs.

XLA runs each multiplication as its own pass over the chunk's memory (it cannot fuse an
elementwise operation into an FFT), so each costs a share of an FFT pair that no arrangement of
XLA operations removes. That is why the library's full-grid far field runs on a native kernel on
the CPU (the back end ``native`` of the plugin ``plugins/ptyro-native``), which does the multiplications inside its FFT passes.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--chunk", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--slices", type=int, default=20)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    c, n, s = a.chunk, a.size, a.slices
    psi = jnp.asarray((rng.random((c, n, n)) + 1j * rng.random((c, n, n))).astype(np.complex64))
    trans = jnp.asarray(np.exp(1j * rng.random((s, n, n))).astype(np.complex64))
    kern = jnp.asarray(np.exp(1j * rng.random((s, n, n))).astype(np.complex64))

    def loop(with_t, with_k):
        def step(w, xs):
            t, k = xs
            w = jnp.fft.fft2(w * t if with_t else w)
            return jnp.fft.ifft2(w * k if with_k else w), None

        return jax.jit(lambda p, t, k: jax.lax.scan(step, p, (t, k))[0])

    loops = {"fft only": loop(False, False), "+ t": loop(True, False), "+ k": loop(False, True), "+ t + k": loop(True, True)}
    for f in loops.values():
        f(psi, trans, kern).block_until_ready()
    times = {name: [] for name in loops}
    for _ in range(a.rounds):
        for name, f in loops.items():
            t0 = time.perf_counter()
            f(psi, trans, kern).block_until_ready()
            times[name].append(time.perf_counter() - t0)
    base = np.median(times["fft only"])
    print(f"{c} waves of {n}x{n}, {s} slices, {a.rounds} interleaved rounds, jax {jax.__version__}")
    for name, v in times.items():
        med = np.median(v)
        per_fft = med / (c * 2 * s) * 1e3
        print(f"  {name:9s} {med * 1e3:7.1f} ms   {med / base:5.3f}x fft only   ({per_fft:.3f} ms per FFT pair-half)")


if __name__ == "__main__":
    main()

"""What a native kernel for the reconstruction's chunk would cost on the CPU (issue 18, session 13):
a timing prototype, not a part of the library.

    .venv/bin/python benchmarks/native_chunk/bench.py [--positions 1024] [--rounds 5] [--check]

Compiles ``chunk.cc`` and ``ffts.cc`` here with g++ (``-O3 -march=native -mno-avx512f
-ffast-math``, against the pocketfft header that ``plugins/ptyro-native/cpp`` vendors) into a
temporary directory, then times on one thread, for RECON-A's shapes (128² windows, a 249² object,
9 sub-pixel groups, random inputs):

- ``chunk``: the chunk's whole work per position (window times grouped probe, FFT, amplitude loss
  and gradient, inverse FFT, the object's and the probe's gradients added in place);
- ``ffts``: pocketfft's FFT pairs alone;
- XLA's FFT pairs (``lax.map`` of ``fft2``/``ifft2`` over chunks of 1 position, the FFT floor's
  fastest chunk here), wall and CPU seconds.

``--check`` first compares the kernel with JAX on small random inputs (16 positions of 32², a
60² object, 3 groups): its loss with the same loss written in JAX, and its gradients with
``jax.grad``'s (the kernel adds ∂L/∂Re + i ∂L/∂Im; JAX returns the conjugate), and fails above
1e-5 relative. It checks the kernel's arithmetic, not the library's step (which has modes, masks,
other losses and the noise floor). Session 13: loss 1.4e-7, gradients 3e-7. Session 13 measured, per
1,024 positions: chunk 114-119 ms, of which 35 ms elementwise; pocketfft's pairs 82.5 ms; XLA's
pairs 130 ms wall / 136 ms CPU (the library's XLA step parts: 168 ms wall / 195 ms CPU).
"""

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
POCKETFFT = os.path.join(HERE, "..", "..", "plugins", "ptyro-native", "cpp")


def build(out_dir: str) -> tuple[ctypes.CDLL, ctypes.CDLL]:
    if shutil.which("g++") is None:
        raise SystemExit("native_chunk: g++ is needed to build the prototype")
    libs = []
    for name in ("chunk", "ffts"):
        so = os.path.join(out_dir, f"{name}.so")
        cmd = [
            "g++",
            "-O3",
            "-march=native",
            "-mno-avx512f",
            "-ffast-math",
            "-shared",
            "-fPIC",
            "-std=c++17",
            f"-I{POCKETFFT}",
            "-o",
            so,
            os.path.join(HERE, f"{name}.cc"),
            "-lpthread",
        ]
        subprocess.run(cmd, check=True)
        libs.append(ctypes.CDLL(so))
    chunk, ffts = libs
    P, I = ctypes.c_void_p, ctypes.c_int
    chunk.chunk.restype = ctypes.c_double
    chunk.chunk.argtypes = [P, I, I, P, P, P, P, P, I, I, I, ctypes.c_float, P, P]
    ffts.ffts.argtypes = [P, I, I, I]
    return chunk, ffts


def check(chunk: ctypes.CDLL) -> None:
    """The kernel's loss and gradients against JAX's on small random inputs (raises above 1e-5)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    n, w, o, groups, scale = 16, 32, 60, 3, 0.7
    obj = (np.exp(1j * rng.random((o, o))) * (0.8 + 0.2 * rng.random((o, o)))).astype(np.complex64)
    probes = (rng.random((groups, w, w)) + 1j * rng.random((groups, w, w))).astype(np.complex64)
    group = rng.integers(0, groups, n).astype(np.int32)
    start = rng.integers(0, o - w, (n, 2)).astype(np.int32)
    data = (0.5 * rng.random((n, w, w))).astype(np.float32)
    weights = rng.random(n).astype(np.float32)
    go, gp = np.zeros_like(obj), np.zeros_like(probes)
    args = (probes.ctypes.data, group.ctypes.data, start.ctypes.data, data.ctypes.data, weights.ctypes.data)
    loss = chunk.chunk(obj.ctypes.data, o, o, *args, n, w, w, scale, go.ctypes.data, gp.ctypes.data)
    sign = np.where(np.add.outer(np.arange(w), np.arange(w)) % 2 == 1, -1.0, 1.0).astype(np.float32)

    def reference(obj_: jax.Array, probes_: jax.Array) -> jax.Array:
        total = jnp.zeros((), jnp.float32)
        for j in range(n):
            win = jax.lax.dynamic_slice(obj_, (int(start[j, 0]), int(start[j, 1])), (w, w))
            far = jnp.fft.fft2(probes_[int(group[j])] * win * sign, norm="ortho")
            r = jnp.sqrt(jnp.abs(far) ** 2 * scale + 1e-12) - jnp.sqrt(data[j] + 1e-12)
            total = total + weights[j] * jnp.sum(r * r)
        return total

    want = float(reference(jnp.asarray(obj), jnp.asarray(probes)))
    g_obj, g_probe = (np.asarray(g) for g in jax.grad(reference, argnums=(0, 1))(jnp.asarray(obj), jnp.asarray(probes)))
    errors = {"loss": abs(loss - want) / abs(want)}
    for name, ours, ref in (("object gradient", go, g_obj), ("probe gradient", gp, g_probe)):
        errors[name] = float(np.max(np.abs(np.conj(ours) - ref)) / np.max(np.abs(ref)))
    print("check against JAX (relative):", ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    if max(errors.values()) > 1e-5:
        raise SystemExit(f"native_chunk: the kernel differs from JAX: {errors}")


def best(fn, rounds: int) -> tuple[float, float]:
    fn()
    out = []
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        fn()
        out.append((time.perf_counter() - t, time.process_time() - c))
    return min(w for w, _ in out), min(c for _, c in out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--positions", type=int, default=1024)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--check", action="store_true", help="first compare the kernel's loss and gradients with JAX's")
    a = p.parse_args(argv)
    n, w, o, groups = a.positions, 128, 249, 9
    rng = np.random.default_rng(0)
    obj = np.exp(1j * rng.random((o, o))).astype(np.complex64)
    probes = (rng.random((groups, w, w)) + 1j * rng.random((groups, w, w))).astype(np.complex64)
    group = rng.integers(0, groups, n).astype(np.int32)
    start = rng.integers(0, o - w, (n, 2)).astype(np.int32)
    data = rng.random((n, w, w)).astype(np.float32)
    weights = np.ones(n, np.float32)
    waves = (rng.random((64, w, w)) + 1j * rng.random((64, w, w))).astype(np.complex64)
    tmp = tempfile.mkdtemp(prefix="native_chunk_")
    try:
        chunk, ffts = build(tmp)
        if a.check:
            check(chunk)

        def run_chunk() -> None:
            go, gp = np.zeros_like(obj), np.zeros_like(probes)
            chunk.chunk(
                obj.ctypes.data,
                o,
                o,
                probes.ctypes.data,
                group.ctypes.data,
                start.ctypes.data,
                data.ctypes.data,
                weights.ctypes.data,
                n,
                w,
                w,
                1.0,
                go.ctypes.data,
                gp.ctypes.data,
            )

        def run_ffts() -> None:
            for _ in range(-(-n // 64)):
                ffts.ffts(waves.ctypes.data, 64, w, w)

        rows = [("chunk (C++, one thread)", *best(run_chunk, a.rounds)), ("pocketfft FFT pairs (one thread)", *best(run_ffts, a.rounds))]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    import jax
    import jax.numpy as jnp

    pairs = jax.jit(lambda x: jax.lax.map(lambda c: jnp.fft.ifft2(jnp.fft.fft2(c)), x.reshape((64, 1, w, w))))
    x = jax.device_put(waves)

    def run_xla() -> None:
        for _ in range(-(-n // 64)):
            jax.block_until_ready(pairs(x))

    rows.append(("XLA FFT pairs (jit, lax.map)", *best(run_xla, a.rounds)))
    print(f"per {n} positions of {w}² (fastest of {a.rounds}; load average {os.getloadavg()[0]:.2f}):")
    for name, wall, cpu in rows:
        print(f"  {name:34s} {wall * 1e3:7.1f} ms wall {cpu * 1e3:7.1f} ms CPU")


if __name__ == "__main__":
    sys.exit(main())

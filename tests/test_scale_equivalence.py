"""1 device, 8 devices and 2 processes give the same numbers: a 4D-STEM simulation and 20 passes
of single-slice ptychography, run in subprocesses (the device count is fixed per process).

The simulation is per position and comes out bit-identical. A reconstruction sums gradients over
the batch, and with several devices the sum runs in another order: with plain gradient descent
(sgd) the results agree to float32 round-off. Adam divides each update by the root of its running
second moment, which turns round-off in weakly illuminated pixels (the rim of the field of view)
into steps of the order of the learning rate, so there the comparison is on the loss history and
on the object inside the scanned area.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CASE = Path(__file__).with_name("scale_case.py")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _run(ndev: int, out: Path) -> dict[str, np.ndarray]:
    subprocess.run([sys.executable, str(CASE), str(ndev), str(out)], check=True, env=_env(), timeout=600)
    return dict(np.load(out))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory) -> dict[str, np.ndarray]:
    return _run(1, tmp_path_factory.mktemp("one") / "r.npz")


def _scanned_phase_difference(a: dict, b: dict) -> float:
    """Max phase difference (rad) of the Adam objects over the central, scanned part."""
    pa, pb = np.angle(a["object"][0]), np.angle(b["object"][0])
    n = pa.shape[0]
    m = n // 3
    return float(np.max(np.abs(pa - pb)[m : n - m, m : n - m]))


def _check(a: dict, b: dict, what: str) -> None:
    rel = _compare(a, b)
    dphi = _scanned_phase_difference(a, b)
    print(f"{what}: max relative difference {rel}; Adam phase difference in the scanned area {dphi:.2e} rad")
    # the simulation: per-position work, identical up to float32 round-off
    for key in ("data", "bf", "adf"):
        assert rel[key] < 1e-5, (key, rel)
    # 20 passes of gradient descent: gradients summed in another order, round-off only
    for key in ("sgd_object", "sgd_loss"):
        assert rel[key] < 1e-4, (key, rel)
    assert rel["sgd_probe"] < 1e-3, rel
    # Adam: the same loss history and object where the data constrain it
    assert rel["loss"] < 1e-3, rel
    assert dphi < 2e-2, dphi


def _compare(a: dict, b: dict) -> dict[str, float]:
    """Relative differences; all must sit at float32 round-off."""
    rel = {}
    for key in ("data", "bf", "adf", "object", "probe", "loss", "sgd_object", "sgd_probe", "sgd_loss"):
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.shape == y.shape, key
        rel[key] = float(np.max(np.abs(x - y)) / max(np.max(np.abs(x)), 1e-30))
    return rel


def test_eight_devices_match_one(one_device, tmp_path) -> None:
    eight = _run(8, tmp_path / "r8.npz")
    assert int(one_device["devices"]) == 1 and int(eight["devices"]) == 8
    _check(one_device, eight, "1 vs 8 devices")


def test_two_processes_match_one(one_device, tmp_path) -> None:
    port = _free_port()
    out = tmp_path / "r2p.npz"
    procs = [
        subprocess.Popen(
            [sys.executable, str(CASE), "1", str(out), f"127.0.0.1:{port}", "2", str(pid)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for pid in (0, 1)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-3000:] for log in logs)
    two = dict(np.load(out))
    assert int(two["devices"]) == 2
    _check(one_device, two, "1 process vs 2 processes")

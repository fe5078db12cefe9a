"""Checkpoints: the whole reconstruction (state, optimizer state, fitted corrections, RNG seed and
progress) in one HDF5 file, so that a run resumes bit-identically.

Layout: ``/state`` (object, probe, positions, slice_thickness, loss, iteration; attrs sampling,
energy), ``/params/NNNN`` and ``/opt_state/NNNN`` (the leaves of the parameter and optimizer
PyTrees in flattening order), ``/nominal_positions``, and root attrs ``format``, ``seed``,
``target_iteration``, ``algorithm``, ``fingerprint``. The pass order is drawn from ``(seed, pass
number)`` only, so the RNG needs no state of its own.

The fingerprint (JSON) names the dataset the run belongs to (number of positions, pattern shape,
real-space sampling, energy, a hash of the nominal positions) and its model (algorithm, slices,
probe modes, object shape): :func:`check_resume` compares it with the run about to resume and
refuses a mismatch with one line saying what differs, instead of continuing another dataset's
or another model's reconstruction. The file is written under a unique temporary name
(:func:`ptyro_core.files.temporary_path`) and renamed into place, so two runs sharing a
checkpoint path never write into one temporary file.
"""

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from ptyro_core import PtyroValueError, ReconState
from ptyro_core.files import hdf5_writing, remove_stale_temporaries, temporary_path

__all__ = ["save_checkpoint", "load_checkpoint", "read_checkpoint", "fingerprint", "check_resume"]

if TYPE_CHECKING:  # h5py is imported where a checkpoint is read or written: it adds 11 MiB to every run
    import h5py

FORMAT = "ptyro-invert-checkpoint-1"


def _write_leaves(group: "h5py.Group", tree: Any) -> None:
    for i, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
        group.create_dataset(f"{i:04d}", data=np.asarray(leaf))


def save_checkpoint(
    path: str | os.PathLike,
    state: ReconState,
    *,
    params: Any = None,
    opt_state: Any = None,
    nominal_positions: Any = None,
    seed: int = 0,
    target_iteration: int | None = None,
    algorithm: str = "",
    extras: dict[str, float] | None = None,
) -> Path:
    """Write ``state`` (and, for resuming, the optimizer's ``params`` / ``opt_state`` PyTrees)
    to HDF5 at ``path``, atomically (written to a temporary file, then renamed)."""
    path = Path(path)
    remove_stale_temporaries(path)
    tmp = temporary_path(path)
    nominal = np.asarray(state.positions if nominal_positions is None else nominal_positions)
    with hdf5_writing(tmp) as f:
        f.attrs["format"] = FORMAT
        f.attrs["fingerprint"] = json.dumps(fingerprint(state, nominal, algorithm))
        f.attrs["seed"] = int(seed)
        f.attrs["target_iteration"] = int(state.iteration) if target_iteration is None else int(target_iteration)
        f.attrs["algorithm"] = str(algorithm)
        for k, v in (extras or {}).items():
            f.attrs["extra_" + k] = np.asarray(v)
        g = f.create_group("state")
        for name in ("object", "probe", "positions", "slice_thickness", "loss", "iteration"):
            g.create_dataset(name, data=np.asarray(getattr(state, name)))
        g.attrs["sampling"] = np.asarray(state.sampling, np.float64)
        g.attrs["energy"] = float(state.energy)
        if params is not None:
            _write_leaves(f.create_group("params"), params)
        if opt_state is not None:
            _write_leaves(f.create_group("opt_state"), opt_state)
        f.create_dataset("nominal_positions", data=nominal)
    try:
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Everything in a checkpoint: ``state`` (ReconState), ``params`` / ``opt_state`` (lists of
    numpy leaves or None), ``nominal_positions``, ``seed``, ``target_iteration``, ``algorithm``."""
    path = Path(path)
    if not path.exists():
        raise PtyroValueError(f"checkpoint: no file at {str(path)!r}; expected an HDF5 checkpoint written by save_checkpoint")
    if path.is_dir():
        raise PtyroValueError(f"checkpoint: {str(path)!r} is a directory; expected an HDF5 checkpoint written by save_checkpoint")
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise PtyroValueError(
            f"checkpoint: cannot read {str(path)!r} as HDF5 ({str(e).splitlines()[0]}); expected a checkpoint written by save_checkpoint"
        ) from None
    with f:
        if f.attrs.get("format") != FORMAT:
            raise PtyroValueError(f"checkpoint: {str(path)!r} has format {f.attrs.get('format')!r}, expected {FORMAT!r}")
        g = f["state"]
        state = ReconState(
            g["object"][()],
            g["probe"][()],
            g["positions"][()],
            sampling=tuple(float(v) for v in g.attrs["sampling"]),
            energy=float(g.attrs["energy"]),
            slice_thickness=g["slice_thickness"][()],
            loss=g["loss"][()],
            iteration=int(g["iteration"][()]),
        )

        def leaves(name: str) -> list | None:
            if name not in f:
                return None
            return [f[name][k][()] for k in sorted(f[name])]

        return {
            "state": state,
            "params": leaves("params"),
            "opt_state": leaves("opt_state"),
            "nominal_positions": f["nominal_positions"][()],
            "seed": int(f.attrs["seed"]),
            "target_iteration": int(f.attrs["target_iteration"]),
            "algorithm": str(f.attrs["algorithm"]),
            "extras": {k[6:]: f.attrs[k] for k in f.attrs if k.startswith("extra_")},
            "fingerprint": json.loads(f.attrs["fingerprint"]) if "fingerprint" in f.attrs else None,
        }


def load_checkpoint(path: str | os.PathLike) -> ReconState:
    """The :class:`~ptyro_core.ReconState` stored in a checkpoint."""
    return read_checkpoint(path)["state"]


def fingerprint(state: ReconState, nominal_positions: Any, algorithm: str) -> dict[str, Any]:
    """What a checkpoint belongs to: the dataset (positions, pattern shape, sampling Å, energy eV,
    a hash of the nominal positions rounded to 1 mÅ) and the model (algorithm, slices, probe
    modes, object shape). Computed from a state, so that a run about to start and a checkpoint
    (old ones included) are compared the same way."""
    pos = np.asarray(nominal_positions, np.float64).reshape(-1, 2)
    digest = hashlib.sha256(np.ascontiguousarray(np.round(pos, 3) + 0.0).tobytes()).hexdigest()[:16]
    probe_shape = tuple(int(v) for v in np.shape(state.probe))
    return {
        "positions": int(pos.shape[0]),
        "pattern shape": list(probe_shape[-2:]),
        "sampling": [round(float(v), 9) for v in state.sampling],
        "energy": round(float(state.energy), 6),
        "positions hash": digest,
        "algorithm": str(algorithm),
        "slices": int(np.shape(state.object)[0]),
        "probe modes": int(probe_shape[0]),
        "object shape": [int(v) for v in np.shape(state.object)[-2:]],
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-5)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return all(_same(x, y) for x, y in zip(a, b))
    return a == b


def check_resume(path: str | os.PathLike, expected: Mapping[str, Any]) -> dict[str, Any]:
    """Read the checkpoint at ``path`` (:func:`read_checkpoint`) and refuse it, with one line
    naming every difference, unless its :func:`fingerprint` matches ``expected`` (the
    fingerprint of the run about to resume: its initial state, nominal positions and
    algorithm) and its state is finite. Returns what :func:`read_checkpoint` returns."""
    ck = read_checkpoint(path)
    got = ck["fingerprint"] or fingerprint(ck["state"], ck["nominal_positions"], ck["algorithm"])
    diffs = [f"{k} {got.get(k)!r} in the checkpoint, {v!r} in this run" for k, v in expected.items() if not _same(got.get(k), v)]
    if diffs:
        raise PtyroValueError(
            f"--resume {str(path)!r} belongs to another run: "
            + "; ".join(diffs)
            + "; expected a checkpoint of this dataset and model (or start without --resume)"
        )
    st = ck["state"]
    for name in ("object", "probe"):
        bad = int(np.sum(~np.isfinite(np.asarray(getattr(st, name)))))
        if bad:
            raise PtyroValueError(
                f"--resume {str(path)!r}: the checkpoint's {name} holds {bad} NaN/inf values; expected a finite state (start without --resume)"
            )
    return ck

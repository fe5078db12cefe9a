"""The reconstruction pipeline: dataset + configuration → :class:`~ptyro_core.ReconState`.

The algorithm, loss and optimizer are registry names (``[reconstruction] algorithm``, ``loss``,
``optimizer``), resolved before anything is compiled; the nominal optics come from ``[probe]``
(azimuths in degrees, converted to radians here). ``ptyro_invert`` provides the initial state
(:func:`ptyro_invert.initial_state`), the algorithms and the checkpoints.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ptyro_core import PtyroValueError
from ptyro_workflows.config import aberrations_for_api, load_config, reconstruction_config

if TYPE_CHECKING:  # imported where used: ptyro show uses phase_correlation without JAX
    from ptyro_core import Dataset4D, ReconState

__all__ = ["apply_scan_config", "initial_state", "reconstruct", "phase_correlation", "components_used", "optics_from_provenance"]

_OPTICS = ("name", "energy", "semiangle_cutoff")


def optics_from_provenance(probe: Mapping[str, Any], provenance: Mapping[str, Any], *, name: str = "the dataset") -> tuple[dict[str, Any], str | None]:
    """The optics recorded in a dataset's provenance that ``probe`` (the user's ``[probe]``
    table, before defaults) does not give, and one line saying what was taken.

    Energy, aperture and probe name are taken key by key; the aberrations as a whole, only when
    ``probe`` gives none (any spelling). Returns ``({}, None)`` when the file records no
    simulation configuration or the user gives everything.
    """
    import tomllib

    from ptyro_workflows.config import ABERRATION_KEYS

    text = (provenance or {}).get("config")
    if not text:
        return {}, None
    try:
        recorded = tomllib.loads(str(text)).get("probe") or {}
    except tomllib.TOMLDecodeError:
        return {}, None
    taken = {k: recorded[k] for k in _OPTICS if k in recorded and probe.get(k) is None}
    if not any(probe.get(k) is not None for k in ABERRATION_KEYS):
        taken.update({k: v for k, v in recorded.items() if k in ABERRATION_KEYS and v is not None})
    if not taken:
        return {}, None
    parts = []
    if "energy" in taken:
        parts.append(f"{float(taken['energy']) / 1e3:g} keV")
    if "semiangle_cutoff" in taken:
        parts.append(f"{float(taken['semiangle_cutoff']):g} mrad")
    parts += [f"{k} = {v:g} {'°' if k.startswith('phi') or k.endswith('_angle') else 'Å'}" for k, v in taken.items() if k in ABERRATION_KEYS and v]
    if "name" in taken and taken["name"] != "aberrated":
        parts.append(f"probe {taken['name']!r}")
    return taken, f"optics from {name}'s provenance (not given by the configuration): {', '.join(parts) or 'no aberrations'}"


def apply_scan_config(dataset: Dataset4D, scan: Mapping[str, Any]) -> Dataset4D:
    """The dataset with positions from ``[scan]``: ``step`` (Å) replaces the file's raster step,
    ``rotation`` (degrees, counter-clockwise from x towards y) rotates the raster about its
    centre. Without either the file's positions are kept."""
    pos = np.asarray(dataset.positions, np.float64)
    rx, ry = dataset.scan_shape
    if scan.get("step") is not None:
        st = scan["step"]
        origin = pos[0]
        xx, yy = np.meshgrid(np.arange(rx) * st[0], np.arange(ry) * st[1], indexing="ij")
        pos = np.stack([xx.ravel(), yy.ravel()], -1) + origin[None, :]
    rot = float(scan.get("rotation") or 0.0)
    if rot:
        c = pos.mean(axis=0, keepdims=True)
        t = math.radians(rot)
        r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        pos = (pos - c) @ r.T + c
    if scan.get("step") is None and not rot:
        return dataset
    from ptyro_core import Dataset4D

    return Dataset4D(dataset.array, pos.astype(np.float32), grid=dataset.grid, energy=dataset.energy)


def _accepts(fn: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that ``fn`` accepts (all if it takes ``**kwargs``)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return options
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return options
    return {k: v for k, v in options.items() if k in sig.parameters}


def initial_state(dataset: Dataset4D, config: Any = None) -> ReconState:
    """The starting point of a reconstruction from the nominal optics in ``[probe]`` and the
    model size in ``[reconstruction]`` (modes, slices, slice thickness)."""
    import ptyro_invert

    cfg = reconstruction_config(config)
    probe, r = cfg["probe"], cfg["reconstruction"]
    if r.get("optics_from"):  # fitted optics (e.g. by a direct method) replace the nominal ones
        from ptyro_workflows.config import ABERRATION_KEYS

        fitted = load_config(r["optics_from"]).get("probe", {})
        reconstruction_config({"probe": fitted})  # the same checks as a [probe] table
        if any(k in ABERRATION_KEYS for k in fitted):  # fitted aberrations replace the nominal ones, whatever their spelling
            probe = {k: v for k, v in probe.items() if k not in ABERRATION_KEYS}
        probe = {**probe, **fitted}
    kwargs = {
        "semiangle_cutoff": float(probe["semiangle_cutoff"]),
        "aberrations": aberrations_for_api(probe),
        "num_modes": int(r["num_modes"]),
        "num_slices": int(r["num_slices"]),
    }
    if r.get("slice_thickness") is not None:
        kwargs["slice_thickness"] = float(r["slice_thickness"])
    if probe.get("name", "aberrated") != "aberrated":
        kwargs["probe"] = probe["name"]
    state = ptyro_invert.initial_state(dataset, **_accepts(ptyro_invert.initial_state, kwargs))
    # counted data need no rescaled probe here: ptyro_invert recognises counts (loss = "auto") and
    # works in fractions of the beam per electron, so the probe keeps unit intensity
    return state


def components_used(cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
    r = cfg["reconstruction"]
    loss = [] if r["loss"] == "auto" else [("loss", r["loss"])]  # "auto": chosen from the data by ptyro_invert
    return [("reconstruction", r["algorithm"]), *loss, ("optimizer", r["optimizer"]), ("probe", cfg["probe"].get("name", "aberrated"))]


def reconstruct(
    dataset: Dataset4D,
    config: Any = None,
    out: str | Path | None = None,
    *,
    state: ReconState | None = None,
    resume: str | Path | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    report: list | None = None,
    elsewhere: bool = False,
    overwrite: bool = False,
    command: list[str] | None = None,
    record: Mapping[str, Any] | None = None,
    inputs: Any = (),
) -> ReconState:
    """Reconstruct ``dataset`` as ``config`` says (a TOML path or a dict of tables; defaults:
    single-slice, the loss chosen from the data, Adam, 20 iterations). ``report``: a list that
    receives one dict per pass (loss, noise floor, fitted aberrations, scan map; see
    :func:`ptyro_invert.recon.run_reconstruction`).

    With ``out``, the result is written there as HDF5 with its provenance (the configuration
    used, the components with their distributions and versions, the seed, ``command``, and the
    caller's ``record``, e.g. ``{"input": path}``), atomically and only by the writing process,
    as :func:`ptyro_workflows.simulate.simulate` writes its dataset: ``out`` is checked before
    anything is computed (its directory exists; it is not one of ``inputs`` nor the checkpoint;
    an existing file only with ``overwrite``), and nothing is left behind when the run fails.

    ``state`` overrides the initial state; ``resume`` continues from a checkpoint written by
    ``ptyro_invert`` (``checkpoint`` names where to write them, every
    ``[reconstruction] checkpoint_every`` iterations). A checkpoint of another dataset,
    calibration or model is refused (:func:`ptyro_invert.checkpoint.check_resume`); an existing
    file named as the checkpoint of a fresh run is replaced only with ``overwrite``. Each pass's
    loss is checked: a NaN/inf loss stops the run naming the components used.

    ``[preprocess]`` runs first (:func:`ptyro_workflows.preprocess.check_or_prepare`): the whole
    preprocessing for data from ``elsewhere`` (or when switched on), else checks that refuse
    uncentred patterns or a clearly wrong scan frame.

    >>> import ptyro_workflows as pw                                   # doctest: +SKIP
    >>> ds = pw.load_dataset("data.h5")                                 # doctest: +SKIP
    >>> state = pw.reconstruct(ds, {"probe": {"semiangle_cutoff": 20.0},
    ...                             "reconstruction": {"iterations": 10}})  # doctest: +SKIP
    """
    import ptyro_invert
    from ptyro_core import get

    cfg = reconstruction_config(config)
    r = cfg["reconstruction"]
    # resolve names first: a typo fails before anything is computed
    for kind, name in components_used(cfg):
        get(kind, name)
    dataset = apply_scan_config(dataset, cfg["scan"])
    from ptyro_workflows.preprocess import check_or_prepare, refine_found, use_found_optics

    dataset, found = check_or_prepare(
        dataset, cfg.get("preprocess"), elsewhere=elsewhere, semiangle_cutoff=float(cfg["probe"]["semiangle_cutoff"]), defocus=_nominal_defocus(cfg["probe"])
    )
    use_found_optics(cfg["probe"], found)
    refine_found(r, found, cfg.get("preprocess"))
    if resume is not None and not Path(resume).exists():
        raise PtyroValueError(f"checkpoint {str(resume)!r} not found; expected a checkpoint file written by a previous run")
    ck_new = checkpoint or r.get("checkpoint")
    if resume is None and ck_new and Path(ck_new).exists() and not overwrite:
        raise PtyroValueError(f"checkpoint {str(ck_new)!r} exists; pass --resume {str(ck_new)!r} to continue from it, or --overwrite to replace it")
    if out is not None:  # checked before anything is computed, like simulate's output
        from ptyro_workflows.io import check_outputs

        check_outputs({"output": out, "checkpoint": ck_new if resume is None else None}, overwrite=overwrite, inputs=[*inputs, resume])
    if state is None:
        from ptyro_workflows.preflight import check_calibration, check_plan, plan_reconstruction

        check_calibration(dataset.grid, dataset.energy, float(cfg["probe"]["semiangle_cutoff"]))
        check_plan(plan_reconstruction(dataset, cfg))
        state = initial_state(dataset, cfg)
    report = [] if report is None else report  # its pass entries say how many streams the steps ran in, on which back end
    options = _algorithm_options(r, progress=progress, resume=resume, checkpoint=checkpoint, report=report)
    if resume is not None:
        from ptyro_invert.checkpoint import check_resume, fingerprint

        check_resume(resume, fingerprint(_expected_model(state, r["algorithm"], r.get("options") or {}), state.positions, r["algorithm"]))
    options["callback"] = _stop_on_a_bad_loss(cfg, options.get("callback"))
    result = ptyro_invert.reconstruct(dataset, state, r["algorithm"], **options)
    if out is not None:
        from ptyro_workflows.io import execution_record

        last = next((e for e in reversed(report) if isinstance(e, dict) and "streams" in e), {})
        # the data's dtype as held, memory budget, streams, the far fields' back end
        record = {"execution": execution_record(dataset, streams=last.get("streams", 1), backend=last.get("backend", "xla")), **dict(record or {})}
        _write(out, result, cfg, float(dataset.energy), found, command=command, record=record, overwrite=overwrite)
    return result


def _algorithm_options(r: Mapping[str, Any], *, progress: bool, resume: Any, checkpoint: Any, report: list | None) -> dict[str, Any]:
    """The keyword arguments of the algorithm from ``[reconstruction]`` (``options`` last: they
    override the rest)."""
    options: dict[str, Any] = {
        "loss": r["loss"],
        "optimizer": r["optimizer"],
        "iterations": int(r["iterations"]),
        "batch_size": int(r["batch_size"]),
        "seed": int(r["seed"]),
        "progress": bool(progress),
    }
    extra = dict(r.get("options") or {})
    lrs = dict(extra.pop("learning_rates", None) or {})
    if r.get("learning_rate") is not None:
        lrs["object"] = float(r["learning_rate"])
    if r.get("probe_learning_rate") is not None:
        if float(r["probe_learning_rate"]) == 0:
            options["fit_probe"] = False
        else:
            lrs["probe"] = float(r["probe_learning_rate"])
    if lrs:
        options["learning_rates"] = lrs
    ck = resume or checkpoint or r.get("checkpoint")
    if ck:
        options["checkpoint"] = str(ck)
        options["resume"] = resume is not None
        if r.get("checkpoint_every"):
            options["checkpoint_every"] = int(r["checkpoint_every"])
    if r.get("fit_aberrations"):
        options["fit_aberrations"] = True
    if r.get("scan_scale", "hold") != "hold":
        options["scan_scale"] = r["scan_scale"]
    if report is not None:
        options["report"] = report
    options.update(extra)
    return options


def _stop_on_a_bad_loss(cfg: Mapping[str, Any], user_callback: Any) -> Any:
    """The callback after each pass: a NaN/inf loss stops the run naming the components used;
    then the user's callback, if any."""

    def check_pass(st: ReconState) -> Any:
        loss = np.asarray(st.loss)
        if loss.size and not np.isfinite(loss[-1]):
            from ptyro_core import get_registry

            reg = get_registry()
            who = ", ".join(reg.describe(k, n) for k, n in components_used(cfg)[:3])
            raise PtyroValueError(
                f"pass {int(np.asarray(st.iteration))}: the loss is {float(loss[-1])!r}; the run is stopped (components: {who}); expected a finite loss"
            )
        return user_callback(st) if user_callback is not None else None

    return check_pass


def _write(out: str | Path, state: ReconState, cfg: dict[str, Any], energy: float, found: Any, *, command: list[str] | None,
           record: Mapping[str, Any] | None, overwrite: bool) -> None:  # fmt: skip
    """The reconstruction file with its provenance (the writing process only)."""
    from ptyro_core.pipeline import is_writer
    from ptyro_workflows.cache import cache_record
    from ptyro_workflows.io import save_reconstruction
    from ptyro_workflows.preprocess_cli import _jsonable
    from ptyro_workflows.provenance import make_provenance

    used = {**cfg, "probe": {**cfg["probe"], "energy": energy}}  # the energy used is the dataset's
    extra = {**cache_record(), **({"preprocess": _jsonable(found.values)} if found is not None else {}), **dict(record or {})}
    prov = make_provenance("reconstruction", used, components_used(used), int(used["reconstruction"]["seed"]), command=command, extra=extra)
    if is_writer():
        save_reconstruction(out, state, provenance=prov, overwrite=overwrite)


def _nominal_defocus(probe: Mapping[str, Any]) -> float | None:
    if probe.get("defocus") is not None:
        return float(probe["defocus"])
    return None if probe.get("C10") is None else -float(probe["C10"])


def _expected_model(state: ReconState, algorithm: str, extra: Mapping[str, Any]) -> Any:
    """``state``'s shapes with as many probe modes as the algorithm will use (mixed-state adds
    modes), for :func:`ptyro_invert.checkpoint.fingerprint` (nothing is allocated)."""
    from types import SimpleNamespace

    m = int(state.probe.shape[0])
    want = extra.get("num_modes")
    if algorithm == "mixed_state":
        m = max(m, int(want) if want is not None else 2)
    elif want is not None:
        m = max(m, int(want))
    probe = np.broadcast_to(np.complex64(0), (m,) + tuple(state.probe.shape[1:]))
    return SimpleNamespace(object=state.object, probe=probe, sampling=state.sampling, energy=state.energy)


def _bilinear_wrap(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample ``img`` at fractional pixel coordinates (x, y) with periodic wrap."""
    nx, ny = img.shape
    x0 = np.floor(x).astype(int)
    y0 = np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    out = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y)))
    for dx, wx in ((0, 1 - fx), (1, fx)):
        for dy, wy in ((0, 1 - fy), (1, fy)):
            out = out + wx * wy * img[(x0 + dx) % nx, (y0 + dy) % ny]
    return out


def phase_correlation(state: ReconState, scan_positions: Any, truth_phase: Any, truth_sampling: tuple[float, float], *, margin: float = 0.0) -> float:
    """Pearson correlation between the reconstructed object phase (summed over slices) and a
    ground-truth phase map (e.g. σ·ΣV of a periodic specimen, on a grid with ``truth_sampling``
    Å), over the scanned area (the box spanned by ``scan_positions``, Å in the specimen frame,
    shrunk by ``margin`` Å).

    The reconstruction's frame is matched to the specimen's through its positions
    (``state.positions`` − ``scan_positions``, mean offset); the truth is treated as periodic.
    """
    spec = np.asarray(scan_positions, np.float64)
    offset = np.mean(np.asarray(state.positions, np.float64) - spec, axis=0)
    obj_phase = np.sum(np.angle(np.asarray(state.object)), axis=0)
    d = state.sampling
    ox, oy = obj_phase.shape
    xs = np.arange(ox) * d[0] - offset[0]
    ys = np.arange(oy) * d[1] - offset[1]
    lo = spec.min(axis=0) + margin
    hi = spec.max(axis=0) - margin
    sx = (xs >= lo[0]) & (xs <= hi[0])
    sy = (ys >= lo[1]) & (ys <= hi[1])
    if sx.sum() < 2 or sy.sum() < 2:
        raise PtyroValueError("phase_correlation: the scanned area covers fewer than 2x2 object pixels")
    rec = obj_phase[np.ix_(sx, sy)]
    X, Y = np.meshgrid(xs[sx] / truth_sampling[0], ys[sy] / truth_sampling[1], indexing="ij")
    ref = _bilinear_wrap(np.asarray(truth_phase, np.float64), X, Y)
    a = rec - rec.mean()
    b = ref - ref.mean()
    den = math.sqrt(float(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / den) if den > 0 else 0.0

"""RECON cases: dataset generation, the workers, and the phase-error scoring."""

import json
import os
import shutil

import numpy as np

import cases
from runner import ADAPTERS, OUR_PY, WORK, Worker, env_python, finish_all, log, ratios, time_codes

REF_ADAPTERS = {"py4dstem": "py4dstem_recon.py", "ptychi": "ptychi_recon.py", "ptyrad": "ptyrad_recon.py", "phaserem": "phaserem_recon.py", "quantem": "quantem_recon.py"}


# --------------------------------------------------------------------------- scoring


# independent on purpose: the scoring does not use ptyro_core.conventions' shift ramp
def _fourier_shift(a: np.ndarray, shift) -> np.ndarray:
    kx = np.fft.fftfreq(a.shape[0])[:, None]
    ky = np.fft.fftfreq(a.shape[1])[None, :]
    return np.real(np.fft.ifft2(np.fft.fft2(a) * np.exp(-2j * np.pi * (kx * shift[0] + ky * shift[1]))))


def phase_error(recon: np.ndarray, truth: np.ndarray, region: tuple, window: int = 16) -> dict:
    """RMS phase error (rad) over ``region`` of the truth (the scanned area) after removing a
    constant offset, with the reconstruction registered to the truth by cross-correlation
    (integer + sub-pixel shift: every code has its own object frame and padding). Orientation
    (transpose) and sign are also searched and reported, so a convention mismatch shows up as
    such instead of as a huge error."""
    t = truth[region].astype(np.float64)
    t = t - t.mean()
    best = None
    for transpose in (False, True):
        for sign in (1.0, -1.0):
            r = recon.T if transpose else recon
            r = sign * r.astype(np.float64)
            if r.shape[0] < t.shape[0] + 8 or r.shape[1] < t.shape[1] + 8:
                continue
            # normalised cross-correlation of t over r (valid positions)
            pad = np.zeros_like(r)
            pad[: t.shape[0], : t.shape[1]] = t
            rm = r - r.mean()
            corr = np.real(np.fft.ifft2(np.fft.fft2(rm) * np.conj(np.fft.fft2(pad))))
            # local energy of r under the window, for normalisation
            ones = np.zeros_like(r)
            ones[: t.shape[0], : t.shape[1]] = 1.0
            s1 = np.real(np.fft.ifft2(np.fft.fft2(rm) * np.conj(np.fft.fft2(ones))))
            s2 = np.real(np.fft.ifft2(np.fft.fft2(rm**2) * np.conj(np.fft.fft2(ones))))
            var = np.maximum(s2 - s1**2 / t.size, 1e-12)
            ncc = corr / np.sqrt(var * np.sum(t**2))
            # every code centres its scan in its object array; the specimen is a crystal, so the
            # correlation has a peak at every lattice translation: search only within ±window px
            # of the centred placement (more than the lattice's Wigner-Seitz radius, 12 px here)
            i0, j0 = (r.shape[0] - t.shape[0]) // 2, (r.shape[1] - t.shape[1]) // 2
            ii, jj = np.meshgrid(np.arange(r.shape[0]), np.arange(r.shape[1]), indexing="ij")
            valid = (np.abs(ii - i0) <= window) & (np.abs(jj - j0) <= window)
            valid &= (ii >= 3) & (jj >= 3) & (ii < r.shape[0] - t.shape[0] - 3) & (jj < r.shape[1] - t.shape[1] - 3)
            ncc = np.where(valid, ncc, -np.inf)
            i, j = np.unravel_index(np.argmax(ncc), ncc.shape)
            # sub-pixel: parabola through the peak
            def parab(a, b, c):
                d = a - 2 * b + c
                return 0.0 if d == 0 else 0.5 * (a - c) / d

            di = parab(ncc[i - 1, j], ncc[i, j], ncc[i + 1, j]) if np.isfinite(ncc[i - 1, j] + ncc[i + 1, j]) else 0.0
            dj = parab(ncc[i, j - 1], ncc[i, j], ncc[i, j + 1]) if np.isfinite(ncc[i, j - 1] + ncc[i, j + 1]) else 0.0
            m = 3
            patch = r[i - m : i + t.shape[0] + m, j - m : j + t.shape[1] + m]
            patch = _fourier_shift(patch, (-di, -dj))[m:-m, m:-m]
            patch = patch - patch.mean()
            rmse = float(np.sqrt(np.mean((patch - t) ** 2)))
            cand = {"phase_rmse": rmse, "ncc": float(ncc[i, j]), "transpose": transpose, "sign": sign, "shift_px": [float(i + di), float(j + dj)]}
            if best is None or cand["ncc"] > best["ncc"]:
                best = cand
    if best is None:
        return {"phase_rmse": None, "error": f"reconstruction {recon.shape} smaller than the scanned region {t.shape}"}
    best["truth_rms"] = float(np.sqrt(np.mean(t**2)))
    return best


def scanned_region(meta: dict) -> tuple:
    pos = np.load(os.path.join(WORK, "cases", meta["case"], "positions.npy"))
    d = meta["sampling"]
    lo = np.ceil(pos.min(0) / d).astype(int)
    hi = np.floor(pos.max(0) / d).astype(int) + 1
    return slice(lo[0], hi[0]), slice(lo[1], hi[1])


# --------------------------------------------------------------------------- run


def compile_share(r: dict) -> dict | None:
    """The compilation share of our first reconstruction in a process: (first call − the median
    steady call) / first call, for the same passes (the library API does not turn on JAX's
    persistent compilation cache, only the CLI does, so the worker's first call compiles)."""
    first, steady = r.get("first_call_s"), r.get("median_s")
    if not isinstance(first, (int, float)) or not steady:
        return None
    disturbed = steady >= first  # the steady rounds slower than a call that also compiled: no share to report
    out = {"first call s": round(first, 3), "steady call s (median)": round(steady, 3), "compile s (first - steady)": round(first - steady, 3),
           "compile share of the first call": None if disturbed else round((first - steady) / first, 3)}  # fmt: skip
    if disturbed:
        out["note"] = "not measured: the steady call was slower than the first call, which also compiled (a disturbed round)"
    return out


def _measured(r: dict) -> float | None:
    """A code's measured time: the median of its rounds, or its first call in a single-run case."""
    first = r.get("first_call_s")
    return r.get("median_s") or (first if isinstance(first, (int, float)) and not r.get("rounds_s") else None)


def run_recon(name: str, rounds: int, info: dict) -> dict:
    log(f"{name}: preparing the dataset")
    case_dir = os.path.join(WORK, "cases", name)
    shutil.rmtree(case_dir, ignore_errors=True)
    meta = cases.make_any_recon_case(case_dir, name)
    if info.get("passes"):  # --passes: fewer passes for every code (per-pass times; errors at that pass)
        meta["iterations"] = int(info["passes"])
        cases.save_meta(case_dir, meta)
    truth = np.load(os.path.join(case_dir, "true_phase.npy")).sum(0)
    region = scanned_region(meta)
    out = {"case": name, "passes": meta["iterations"], "note": f"{meta['slices']} slice(s), {meta['modes']} mode(s), noise={'Poisson %.0e e/pattern' % meta['dose'] if meta['noise'] else 'none'}; "
           f"{meta['iterations']} passes, batch {meta['batch_size']}, probe updated; phase error = RMS over the scanned area after removing a constant offset and registering the object"}
    specs = [("ptyro", OUR_PY, "ours_recon.py")]
    # py4DSTEM, phaserEM and quantem in every case; PtyRAD and Pty-chi on RECON-A (or --all-references)
    refs = list(REF_ADAPTERS) if (name == "recon-a" or info.get("all_references")) else ["py4dstem", "phaserem", "quantem"]
    if name in cases.RECON_L_CASES and not info.get("all_references"):  # 16,384+ patterns: py4DSTEM takes hours on 2 cores
        refs = ["phaserem", "quantem"]
    if info.get("references") is not None:  # --references: only these ([] for none)
        refs = [r for r in refs if r in info["references"]] if name not in cases.RECON_L_CASES else [r for r in info["references"] if r in REF_ADAPTERS]
    for ref in refs:
        script = REF_ADAPTERS[ref]
        env = info["envs"].get(ref, {})
        if env.get("ok"):
            specs.append((ref, env_python(ref), script))
        else:
            out[ref] = {"error": f"failed: {env.get('error', 'not installed')}"}
    # the FFTs a pass must do (adapters/recon_floor.py), timed in the same rounds
    specs.insert(1, ("fft-floor", OUR_PY, "recon_floor.py"))
    workers = []
    for label, py, script in specs:
        log(f"  starting {label}")
        # the JAX codes (ours, the floor, phaserEM) get a timed first call: their compilation is reported apart
        workers.append(Worker(label, py, script, case_dir, env={"OMP_NUM_THREADS": str(os.cpu_count() or 2)}, warmup=(label in ("ptyro", "fft-floor", "phaserem"))))
        if workers[-1].failed:
            log(f"  {label} failed: {workers[-1].failed}")
    res = time_codes(workers, rounds)
    # our per-pass trace (not timed as a round)
    trace = None
    ours = workers[0]
    if not ours.failed:
        log("  ptyro: per-pass trace")
        r = ours.ask(cmd="extra", what="trace")
        if r.get("ok"):
            trace = r.get("pass_times_s")
        else:
            ours.failed = None  # a failed trace must not discard the timed rounds
            out["trace_error"] = r.get("error")
    finish_all(workers, res)
    out.update(res)
    acc = {}
    for label, *_ in specs[:1] + specs[2:]:
        f = os.path.join(WORK, "out", name, label, "phase.npy")
        if os.path.exists(f):
            acc[label] = phase_error(np.load(f), truth, region)
    out["accuracy"] = acc
    out["ratios"] = {f"ptyro/{b}": ratios(res, "ptyro", b) for b in ["fft-floor", *refs]}
    out["compile"] = compile_share(res.get("ptyro", {}))
    # per pass: every code runs the same number of passes
    it = meta["iterations"]
    # (single-run cases: the first call, compilation included, where a code made one)
    out["per_pass_s"] = {k: (_measured(v) / it if _measured(v) else None) for k, v in res.items()}
    # time to reach py4DSTEM's 20-pass phase error
    tf = os.path.join(WORK, "out", name, "ptyro", "trace_phase.npy")
    if trace and os.path.exists(tf) and acc.get("py4dstem", {}).get("phase_rmse") is not None and res["ptyro"].get("median_s"):
        phases = np.load(tf)
        errs = [phase_error(p, truth, region)["phase_rmse"] for p in phases]
        target = acc["py4dstem"]["phase_rmse"]
        k = next((i + 1 for i, e in enumerate(errs) if e <= target), None)
        t_ours = None if k is None else res["ptyro"]["median_s"] * k / it
        t_ref = res["py4dstem"].get("median_s")
        out["time_to_reference_error"] = {
            "py4DSTEM 20-pass phase error (rad)": round(target, 5),
            "our phase error per pass (rad)": [round(e, 5) for e in errs],
            "our passes to reach it": k,
            "our time to reach it (s, median pass time x passes)": None if t_ours is None else round(t_ours, 3),
            "py4DSTEM time for 20 passes (s)": None if t_ref is None else round(t_ref, 3),
            "ratio": None if (t_ours is None or not t_ref) else round(t_ours / t_ref, 4),
        }
    mem = {k: v.get("peak_rss_mb") for k, v in res.items() if v.get("peak_rss_mb")}
    if mem.get("ptyro") and mem.get("py4dstem"):
        out["memory"] = {"peak RSS MiB": mem, "ptyro/py4dstem": round(mem["ptyro"] / mem["py4dstem"], 3)}
        base = {k: v.get("import_rss_mb") for k, v in res.items() if v.get("import_rss_mb")}
        if base.get("ptyro") and base.get("py4dstem"):  # not the target's figure: what the run adds
            above = {k: round(mem[k] - base[k], 1) for k in base if k in mem}
            out["memory"]["RSS after imports MiB"] = {k: round(v, 1) for k, v in base.items()}
            out["memory"]["peak above the imports MiB"] = above
            out["memory"]["above imports, ptyro/py4dstem"] = round(above["ptyro"] / above["py4dstem"], 3)
    return out

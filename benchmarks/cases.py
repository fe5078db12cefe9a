"""The fixed benchmark cases and the generation of their shared input files.

Every code reads the same files: for simulations, the potential slices (V·Å, one ``.npy`` per
frozen-phonon configuration) and the scan; for reconstructions, one dataset (patterns, positions,
the initial probe) and the ground-truth object used to score each result. See README.md.
"""

import json
import math
import os

import numpy as np

# --------------------------------------------------------------------------- constants

A_STO = 3.905  # Å, SrTiO3 cubic lattice constant
SIM = dict(
    energy=200e3,
    semiangle_cutoff=20.0,
    gpts=(256, 256),
    cells=(8, 8, 10),
    slice_thickness=1.9525,
    scan_start=(3.5 * A_STO, 3.5 * A_STO),
    scan_end=(4.5 * A_STO, 4.5 * A_STO),
    bf_mrad=(0.0, 20.0),
    adf_mrad=(30.0, 65.0),
)
SIM_CASES = {
    "sim-a": dict(scan_gpts=(16, 16), phonons=0),
    "sim-b-scan": dict(scan_gpts=(64, 64), phonons=0),
    "sim-b-phonons": dict(scan_gpts=(16, 16), phonons=8),
}
RECON = dict(
    energy=300e3,
    semiangle_cutoff=25.0,
    C10=200.0,  # Å; C10 = -defocus, positive = overfocus (crossover 200 Å before the specimen)
    sampling=0.15,  # Å per pixel (1.025 mrad per detector pixel at 300 keV)
    pattern_gpts=(128, 128),
    object_gpts=(256, 256),
    scan_gpts=(32, 32),
    scan_step=0.5,
    iterations=20,
    batch_size=64,
    dose=1e5,
)
RECON_CASES = {
    "recon-a": dict(noise=False, slices=1, modes=1),
    "recon-a-poisson": dict(noise=True, slices=1, modes=1),
    "recon-b-multislice": dict(noise=False, slices=3, modes=1, slice_thickness=10.0),
    "recon-b-mixed": dict(noise=False, slices=1, modes=4),
}


# independent on purpose: the benchmark's reference model does not use ptyro_core.conventions
def wavelength(energy: float) -> float:
    h, m0, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    E = energy * e
    return h / math.sqrt(2 * m0 * E * (1 + E / (2 * m0 * c**2))) * 1e10


def save_meta(case_dir: str, meta: dict) -> None:
    os.makedirs(case_dir, exist_ok=True)
    with open(os.path.join(case_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


# --------------------------------------------------------------------------- SIM


def srtio3_atoms(cells=(8, 8, 10), a=A_STO, z_offset=None):
    """SrTiO3 [001]: positions (n, 3) Å and Z. Atoms sit at z = a/4 and 3a/4 within each cell so
    that none lies on a slice boundary of a/2-thick slices (the assignment is then unambiguous)."""
    z_offset = a / 4 if z_offset is None else z_offset
    basis = [
        (38, 0.0, 0.0, 0.0),
        (8, 0.5, 0.5, 0.0),
        (22, 0.5, 0.5, 0.5),
        (8, 0.5, 0.0, 0.5),
        (8, 0.0, 0.5, 0.5),
    ]
    pos, num = [], []
    for i in range(cells[0]):
        for j in range(cells[1]):
            for k in range(cells[2]):
                for Z, fx, fy, fz in basis:
                    pos.append(((i + fx) * a, (j + fy) * a, (k + fz) * a + z_offset))
                    num.append(Z)
    return np.asarray(pos, np.float64), np.asarray(num, np.int32), (cells[0] * a, cells[1] * a, cells[2] * a)


def displaced(positions, sigma_xy: float, seed: int):
    """A frozen-phonon configuration: Gaussian displacements (rms ``sigma_xy`` Å per direction)."""
    rng = np.random.default_rng(seed)
    out = positions.copy()
    out[:, :2] += rng.normal(0.0, sigma_xy, size=(positions.shape[0], 2))
    return out


def scan_positions(start, end, gpts):
    axes = [np.linspace(s, e, n, endpoint=False) for s, e, n in zip(start, end, gpts)]
    xx, yy = np.meshgrid(*axes, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], -1)


# --------------------------------------------------------------------------- RECON


def mos2_phase(gpts, sampling, *, a=3.16, peak=1.0, rotation=0.0, shift=(0.0, 0.0), sigma=0.35):
    """A MoS2-like monolayer phase (rad) on a (nx, ny) grid: Gaussian Mo (peak ``peak``) and S2
    (0.7 peak) columns on a honeycomb lattice, lattice ``rotation`` (rad) and ``shift`` (Å)."""
    nx, ny = gpts
    x = np.arange(nx) * sampling
    y = np.arange(ny) * sampling
    X, Y = np.meshgrid(x, y, indexing="ij")
    c, s = math.cos(rotation), math.sin(rotation)
    a1 = np.array([a * c, a * s])
    a2 = np.array([a * (0.5 * c - math.sqrt(3) / 2 * s), a * (0.5 * s + math.sqrt(3) / 2 * c)])
    sites = [(0.0, 1.0), ((a1 + a2) / 3, 0.7)]
    ext = max(nx * sampling, ny * sampling)
    nmax = int(ext / a * 2) + 3
    phase = np.zeros(gpts)
    for i in range(-nmax, nmax + 1):
        for j in range(-nmax, nmax + 1):
            base = i * a1 + j * a2 + np.asarray(shift)
            for off, w in sites:
                p = base + off
                if -3 < p[0] < nx * sampling + 3 and -3 < p[1] < ny * sampling + 3:
                    r2 = (X - p[0]) ** 2 + (Y - p[1]) ** 2
                    phase += w * np.exp(-r2 / (2 * sigma**2))
    return phase * (peak / phase.max())


def probe_array(gpts, sampling, energy, semiangle, C10):
    """The probe (centred at index n//2, Σ|ψ|² = 1): hard aperture with a one-pixel soft edge and
    defocus phase χ = π λ C10 k²."""
    lam = wavelength(energy)
    kx = np.fft.fftfreq(gpts[0], sampling)[:, None]
    ky = np.fft.fftfreq(gpts[1], sampling)[None, :]
    k = np.sqrt(kx**2 + ky**2)
    alpha = k * lam
    edge = lam / (gpts[0] * sampling)
    amp = np.clip((semiangle * 1e-3 - alpha) / edge + 0.5, 0.0, 1.0)
    chi = math.pi * lam * C10 * k**2
    psi = np.fft.fftshift(np.fft.ifft2(amp * np.exp(-1j * chi)))
    return (psi / np.sqrt(np.sum(np.abs(psi) ** 2))).astype(np.complex128)


def fresnel(gpts, sampling, energy, dz):
    lam = wavelength(energy)
    kx = np.fft.fftfreq(gpts[0], sampling)[:, None]
    ky = np.fft.fftfreq(gpts[1], sampling)[None, :]
    return np.exp(-1j * math.pi * lam * dz * (kx**2 + ky**2))


# independent on purpose: the benchmark's reference model does not use ptyro_core.conventions (λ, shift ramps)
def forward(objects, probes, weights, positions, sampling, energy, dz):
    """Ground-truth patterns (n, qx, qy), centred, unitary FFT: the probe (modes) shifted by
    sub-pixel phase ramps, multiplied by object window(s), propagated between slices."""
    npx = probes.shape[-1]
    kx = np.fft.fftfreq(npx)[:, None]
    ky = np.fft.fftfreq(npx)[None, :]
    prop = fresnel((npx, npx), sampling, energy, dz) if objects.shape[0] > 1 else None
    out = np.zeros((positions.shape[0], npx, npx))
    fprobes = np.fft.fft2(probes)
    for n, (px, py) in enumerate(positions / sampling):
        ix, iy = int(math.floor(px)), int(math.floor(py))
        fx, fy = px - ix, py - iy
        ramp = np.exp(-2j * math.pi * (kx * fx + ky * fy))
        for m in range(probes.shape[0]):
            w = np.fft.ifft2(fprobes[m] * ramp)
            for s in range(objects.shape[0]):
                w = w * objects[s, ix - npx // 2 : ix - npx // 2 + npx, iy - npx // 2 : iy - npx // 2 + npx]
                if s < objects.shape[0] - 1:
                    w = np.fft.ifft2(np.fft.fft2(w) * prop)
            out[n] += weights[m] * np.abs(np.fft.fftshift(np.fft.fft2(w, norm="ortho"))) ** 2
    return out


def make_recon_case(case_dir: str, name: str) -> dict:
    spec = RECON_CASES[name]
    r = RECON
    dx = r["sampling"]
    ogpts, pgpts = r["object_gpts"], r["pattern_gpts"]
    nslices, nmodes = spec["slices"], spec["modes"]
    if nslices == 1:
        phases = mos2_phase(ogpts, dx, peak=1.0)[None]
    else:
        phases = np.stack(
            [mos2_phase(ogpts, dx, peak=0.5, rotation=math.radians(20 * s), shift=(0.7 * s, 0.4 * s)) for s in range(nslices)]
        )
    objects = np.exp(1j * phases)
    if nmodes == 1:
        probes = probe_array(pgpts, dx, r["energy"], r["semiangle_cutoff"], r["C10"])[None]
        weights = np.array([1.0])
    else:  # focal spread (incoherent defocus series, Gauss-Hermite weights, 30 Å rms)
        nodes, w = np.polynomial.hermite_e.hermegauss(nmodes)
        weights = w / w.sum()
        probes = np.stack([probe_array(pgpts, dx, r["energy"], r["semiangle_cutoff"], r["C10"] + 30.0 * z) for z in nodes])
    centre = np.array(ogpts) * dx / 2
    half = (np.array(r["scan_gpts"]) - 1) * r["scan_step"] / 2
    positions = scan_positions(centre - half, centre - half + np.array(r["scan_gpts"]) * r["scan_step"], r["scan_gpts"])
    dz = spec.get("slice_thickness", 1.0)
    patterns = forward(objects, probes, weights, positions, dx, r["energy"], dz)
    if spec["noise"]:
        rng = np.random.default_rng(1234)
        patterns = rng.poisson(patterns * r["dose"]).astype(np.float64) / r["dose"]
    patterns = patterns.reshape(tuple(r["scan_gpts"]) + tuple(pgpts)).astype(np.float32)
    init_probe = probe_array(pgpts, dx, r["energy"], r["semiangle_cutoff"], r["C10"]).astype(np.complex64)
    os.makedirs(case_dir, exist_ok=True)
    np.save(os.path.join(case_dir, "patterns.npy"), patterns)
    np.save(os.path.join(case_dir, "positions.npy"), positions.astype(np.float64))
    np.save(os.path.join(case_dir, "probe.npy"), init_probe)
    np.save(os.path.join(case_dir, "true_phase.npy"), phases.astype(np.float32))
    lam = wavelength(r["energy"])
    meta = dict(
        case=name,
        kind="recon",
        energy=r["energy"],
        wavelength=lam,
        semiangle_cutoff=r["semiangle_cutoff"],
        C10=r["C10"],
        defocus=-r["C10"],
        sampling=dx,
        angular_sampling_mrad=lam / (pgpts[0] * dx) * 1e3,
        reciprocal_sampling=1.0 / (pgpts[0] * dx),
        pattern_gpts=list(pgpts),
        object_gpts=list(ogpts),
        scan_gpts=list(r["scan_gpts"]),
        scan_step=r["scan_step"],
        iterations=r["iterations"],
        batch_size=r["batch_size"],
        slices=nslices,
        slice_thickness=dz,
        modes=nmodes,
        noise=spec["noise"],
        dose=r["dose"] if spec["noise"] else None,
        files=dict(patterns="patterns.npy (Rx, Ry, Qx, Qy) float32, centred, each sums to ~1",
                   positions="positions.npy (Rx*Ry, 2) probe centres (x, y) in Å, object pixel [0,0] at (0,0)",
                   probe="probe.npy (Qx, Qy) complex64 initial probe, centred, sum |psi|^2 = 1",
                   true_phase="true_phase.npy (slices, ox, oy) ground-truth phase"),
    )
    save_meta(case_dir, meta)
    return meta


def make_sim_atoms(case_dir: str, name: str) -> int:
    """Write ``atoms_<k>.npz`` (positions, numbers, cell) for every configuration; returns the count."""
    spec = SIM_CASES[name]
    pos, num, cell = srtio3_atoms(SIM["cells"])
    n = max(1, spec["phonons"])
    os.makedirs(case_dir, exist_ok=True)
    for k in range(n):
        p = displaced(pos, 0.1, seed=k) if spec["phonons"] else pos
        np.savez(os.path.join(case_dir, f"atoms_{k}.npz"), positions=p, numbers=num, cell=np.asarray(cell))
    return n


def sim_meta(name: str, potential_files, potential_source: str) -> dict:
    spec = SIM_CASES[name]
    cell = (SIM["cells"][0] * A_STO, SIM["cells"][1] * A_STO)
    return dict(
        case=name,
        kind="sim",
        energy=SIM["energy"],
        semiangle_cutoff=SIM["semiangle_cutoff"],
        gpts=list(SIM["gpts"]),
        extent=list(cell),
        sampling=[cell[0] / SIM["gpts"][0], cell[1] / SIM["gpts"][1]],
        slice_thickness=SIM["slice_thickness"],
        num_slices=int(round(SIM["cells"][2] * A_STO / SIM["slice_thickness"])),
        scan_start=list(SIM["scan_start"]),
        scan_end=list(SIM["scan_end"]),
        scan_gpts=list(spec["scan_gpts"]),
        phonons=spec["phonons"],
        batch_size=64,
        potential_files=list(potential_files),
        potential_source=potential_source,
        bf_mrad=list(SIM["bf_mrad"]),
        adf_mrad=list(SIM["adf_mrad"]),
    )


def ours_potential(case_dir: str, n: int):
    """Our Kirkland potential (infinite projection) for each configuration, or None when the
    library does not provide it yet. Writes ``ptyro_potential_<k>.npy``."""
    try:
        import ptyro_core
        from ptyro_core import Atoms, Grid

        build = ptyro_core.get("potential", "kirkland")
    except Exception as e:  # not available: caller falls back
        return None, f"{type(e).__name__}: {e}"
    cell = (SIM["cells"][0] * A_STO, SIM["cells"][1] * A_STO)
    grid = Grid(tuple(SIM["gpts"]), (cell[0] / SIM["gpts"][0], cell[1] / SIM["gpts"][1]))
    files = []
    for k in range(n):
        z = np.load(os.path.join(case_dir, f"atoms_{k}.npz"))
        atoms = Atoms(z["positions"].astype(np.float32), z["numbers"], tuple(float(c) for c in z["cell"]))
        pot = build(atoms, grid, slice_thickness=SIM["slice_thickness"], projection="infinite")
        arr = np.asarray(pot.array, np.float32)
        f = f"ptyro_potential_{k}.npy"
        np.save(os.path.join(case_dir, f), arr)
        files.append(f)
    return files, None


# --------------------------------------------------------------------------- RECON-L (sizes users run)

#: shaped like PtyRAD's published benchmark (tBL-WSe2: 128 x 128 scan, 80 kV, 24.9 mrad, 0.429 Å
#: step, 128 x 128 patterns at 0.1494 Å real-space pixels); the specimen is a WSe2-like twisted
#: bilayer phase object made here, not the experimental data
RECON_L = dict(
    energy=80e3,
    semiangle_cutoff=24.9,
    C10=100.0,  # Å overfocus (nominal, also the initial probe)
    sampling=0.1494,
    pattern_gpts=(128, 128),
    scan_step=0.429,
    iterations=3,
    batch_size=64,
    dose=None,
)
RECON_L_CASES = {
    "recon-l": dict(scan_gpts=(128, 128), slices=1, modes=1),
    "recon-l-ms": dict(scan_gpts=(128, 128), slices=6, modes=12, slice_thickness=2.0),
    # 65,536 patterns = 4 GiB as float32: the out-of-core case (written to disk chunk by chunk)
    "recon-l-256": dict(scan_gpts=(256, 256), slices=1, modes=1),
    # the dry run's stand-in (seconds on a CPU): same code path, tiny sizes
    "recon-l-tiny": dict(scan_gpts=(8, 8), slices=2, modes=2, slice_thickness=2.0, pattern_gpts=(32, 32), sampling=0.3),
}



def forward_batched(objects, probes, weights, positions, sampling, energy, dz, out, batch=256):
    """The same model as :func:`forward` (probe modes shifted by sub-pixel phase ramps, object
    windows, Fresnel propagation between slices, centred unitary far field, modes summed
    incoherently), vectorised over batches of positions and written into ``out`` (n, qx, qy) —
    which may be a memory map, so a 4 GiB dataset never sits in memory."""
    try:
        import scipy.fft as sfft

        fft2 = lambda a: sfft.fft2(a, workers=-1)  # noqa: E731
        ifft2 = lambda a: sfft.ifft2(a, workers=-1)  # noqa: E731
    except ImportError:  # pragma: no cover
        fft2, ifft2 = np.fft.fft2, np.fft.ifft2
    npx = probes.shape[-1]
    kx = np.fft.fftfreq(npx)[:, None]
    ky = np.fft.fftfreq(npx)[None, :]
    prop = fresnel((npx, npx), sampling, energy, dz).astype(np.complex64) if objects.shape[0] > 1 else None
    fprobes = fft2(probes.astype(np.complex64))
    objects = objects.astype(np.complex64)
    ar = np.arange(npx)
    for s0 in range(0, positions.shape[0], batch):
        p = positions[s0 : s0 + batch] / sampling
        ix, iy = np.floor(p[:, 0]).astype(int), np.floor(p[:, 1]).astype(int)
        fx, fy = (p[:, 0] - ix)[:, None, None], (p[:, 1] - iy)[:, None, None]
        ramp = np.exp(-2j * np.pi * (kx * fx + ky * fy)).astype(np.complex64)
        rows = (ix - npx // 2)[:, None] + ar[None, :]
        cols = (iy - npx // 2)[:, None] + ar[None, :]
        acc = np.zeros((p.shape[0], npx, npx))
        for m in range(probes.shape[0]):
            w = ifft2(fprobes[m][None] * ramp)
            for s in range(objects.shape[0]):
                w = w * objects[s][rows[:, :, None], cols[:, None, :]]
                if s < objects.shape[0] - 1:
                    w = ifft2(fft2(w) * prop)
            acc += weights[m] * np.abs(np.fft.fftshift(fft2(w), axes=(-2, -1))) ** 2 / (npx * npx)
        out[s0 : s0 + p.shape[0]] = acc.astype(out.dtype)
    return out


def make_recon_l_case(case_dir: str, name: str) -> dict:
    """Write a RECON-L dataset (``patterns.npy`` as a memory map, positions, initial probe, truth)
    with the suite's own forward model (:func:`forward_batched`, numpy/scipy only)."""
    spec = dict(RECON_L)
    spec.update(RECON_L_CASES[name])
    dx, pgpts, scan = spec["sampling"], tuple(spec["pattern_gpts"]), tuple(spec["scan_gpts"])
    nslices, nmodes = spec["slices"], spec["modes"]
    extent = (np.array(scan) - 1) * spec["scan_step"] + np.array(pgpts) * dx + 4.0
    ogpts = tuple(int(math.ceil(e / dx / 16) * 16) for e in extent)
    if nslices == 1:
        phases = mos2_phase(ogpts, dx, a=3.28, peak=1.0)[None]
    else:  # two layers twisted by 3°, each spread over half the slices
        half = nslices // 2
        phases = np.stack([mos2_phase(ogpts, dx, a=3.28, peak=1.0 / half, rotation=math.radians(3.0 if s >= half else 0.0),
                                      shift=(0.5, 0.3) if s >= half else (0.0, 0.0)) for s in range(nslices)])  # fmt: skip
    objects = np.exp(1j * phases)
    if nmodes == 1:
        probes = probe_array(pgpts, dx, spec["energy"], spec["semiangle_cutoff"], spec["C10"])[None]
        weights = np.array([1.0])
    else:  # focal spread, Gauss-Hermite nodes (30 Å rms)
        nodes, w = np.polynomial.hermite_e.hermegauss(nmodes)
        weights = w / w.sum()
        probes = np.stack([probe_array(pgpts, dx, spec["energy"], spec["semiangle_cutoff"], spec["C10"] + 30.0 * z) for z in nodes])
    centre = np.array(ogpts) * dx / 2
    half_scan = (np.array(scan) - 1) * spec["scan_step"] / 2
    positions = scan_positions(centre - half_scan, centre - half_scan + np.array(scan) * spec["scan_step"], scan)
    os.makedirs(case_dir, exist_ok=True)
    out = np.lib.format.open_memmap(os.path.join(case_dir, "patterns.npy"), mode="w+", dtype=np.float32, shape=scan + pgpts)
    forward_batched(objects, probes, weights, positions, dx, spec["energy"], spec.get("slice_thickness", 1.0), out.reshape((-1,) + pgpts))
    out.flush()
    del out
    np.save(os.path.join(case_dir, "positions.npy"), positions.astype(np.float64))
    np.save(os.path.join(case_dir, "probe.npy"), probe_array(pgpts, dx, spec["energy"], spec["semiangle_cutoff"], spec["C10"]).astype(np.complex64))
    np.save(os.path.join(case_dir, "true_phase.npy"), phases.astype(np.float32))
    lam = wavelength(spec["energy"])
    meta = dict(
        case=name, kind="recon", energy=spec["energy"], wavelength=lam, semiangle_cutoff=spec["semiangle_cutoff"],
        C10=spec["C10"], defocus=-spec["C10"], sampling=dx, angular_sampling_mrad=lam / (pgpts[0] * dx) * 1e3,
        reciprocal_sampling=1.0 / (pgpts[0] * dx), pattern_gpts=list(pgpts), object_gpts=list(ogpts), scan_gpts=list(scan),
        scan_step=spec["scan_step"], iterations=spec["iterations"], batch_size=spec["batch_size"], slices=nslices,
        slice_thickness=spec.get("slice_thickness", 1.0), modes=nmodes, noise=False, dose=None,
        bytes_float32=int(np.prod(scan + pgpts)) * 4,
    )  # fmt: skip
    save_meta(case_dir, meta)
    return meta


def make_any_recon_case(case_dir: str, name: str) -> dict:
    """Write the RECON case ``name``: a RECON-L one (:func:`make_recon_l_case`) or another
    (:func:`make_recon_case`)."""
    return (make_recon_l_case if name in RECON_L_CASES else make_recon_case)(case_dir, name)

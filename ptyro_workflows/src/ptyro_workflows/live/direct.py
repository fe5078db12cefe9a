"""Direct methods of ``ptyro_invert.direct`` (the direct-phase issue) as live processors.

Two kinds: ``live_<name>(images, geometry) -> {name: image}`` works on the partial virtual images
of :class:`~ptyro_workflows.live.processors.VirtualDetectors` (plus ``received``, the (Rx, Ry)
mask) and is run by :class:`~ptyro_workflows.live.processors.DirectMethod` (``icom``); an
incremental processor of its own takes the patterns as they arrive (``ssb``:
:class:`LiveSSB`). Both are named in ``[live] direct = ["icom", "ssb"]``.

``icom``: the live centre of mass (mrad → Å⁻¹), minus its mean over the received positions
(a constant descan), 0 where nothing arrived yet, integrated by
``ptyro_invert.direct.icom.integrate_gradient`` on the scan raster.
"""

import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from ptyro_core import PtyroValueError
from ptyro_core.conventions import energy2wavelength
from ptyro_workflows.live.processors import Geometry, live_state

__all__ = ["live_icom", "LiveSSB", "LiveTCBF", "METHODS", "INCREMENTAL"]


def live_icom(images: dict[str, Any], geometry: Geometry, *, highpass: float = 0.0) -> dict[str, np.ndarray]:
    import jax.numpy as jnp

    from ptyro_invert.direct.icom import integrate_gradient

    got = np.asarray(images["received"], bool)
    per_mrad = 1e-3 / energy2wavelength(geometry.energy)  # Å⁻¹ per mrad
    field = np.stack([np.asarray(images["com_x"]), np.asarray(images["com_y"])], -1) * per_mrad
    if got.any():
        field = np.where(got[..., None], field - field[got].mean(axis=0), 0.0)
    vectors = np.diag(np.asarray(geometry.scan_step, np.float64))
    return {"phase": np.asarray(integrate_gradient(jnp.asarray(field, jnp.float32), vectors, highpass))}


def _devices(devices: Any) -> list[Any]:
    """``[live] devices``: "all" (every device of the default backend; the mesh of
    ``ptyro_core.pipeline.device_mesh``), a number of them, or a list of JAX devices."""
    import jax

    from ptyro_core.pipeline import device_mesh

    every = list(device_mesh().devices.flat)
    if devices is None or devices == "all":
        return every
    if isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= len(every):
            raise PtyroValueError(f"[live] devices = {devices}: expected 1 to {len(every)} (the devices JAX sees) or 'all'")
        return every[:devices]
    if isinstance(devices, (list, tuple)) and devices and all(isinstance(d, jax.Device) for d in devices):
        return list(devices)
    raise PtyroValueError(f"[live] devices = {devices!r}: expected 'all', a number of devices or a list of JAX devices")


class LiveSSB:
    """Single-sideband ptychography updated as the frames arrive (LiberTEM-live's approach):
    each pattern I_r adds its share to the object spectrum,
    Φ(Q) += e^{−2πi Q·r} Σ_k I_r(k) w(k, Q), with the weights w of
    ``ptyro_invert.direct.ssb`` (:func:`~ptyro_invert.direct.ssb.filter_weights`, the probe's
    aberrations included) on the aperture pixels; the phase is Re F⁻¹[Φ / dose] (the dose, the
    mean counts per pattern, of the frames so far). The cost is per frame (one matrix product of
    the aperture pixels by the weights), so at the end of the scan the result is there, equal
    to the offline ``ssb`` on the whole dataset (to float32 rounding).

    Frames are dispatched to the devices (``devices``: every device of the mesh by default) in
    turn as they arrive, each device keeping a partial spectrum; a snapshot sums them. Blocks are
    padded to ``block`` frames so the step compiles once."""

    name = "ssb"

    def __init__(self, config: Mapping[str, Any], *, threshold: float = 0.5, devices: Any = "all", block: int = 64) -> None:
        self.config = config
        self.threshold = float(threshold)
        self.block = int(block)
        self._want_devices = devices

    def start(self, geometry: Geometry) -> None:
        import jax
        import jax.numpy as jnp

        from ptyro_invert.direct._common import scan_lattice
        from ptyro_invert.direct.ssb import filter_weights, half_plane

        self.geometry = g = geometry
        self.devices = _devices(self._want_devices)
        _, positions, self.state = live_state(self.config, g)
        self.lattice = scan_lattice(positions, g.scan_shape, who="live ssb")
        rx, ry = g.scan_shape
        # The phase is Re F⁻¹Φ = F⁻¹Ψ, Ψ(Q) = (Φ(Q) + conj Φ(−Q)) / 2, Hermitian: half the plane
        # (Rx, Ry // 2 + 1) is enough. With G(k, −Q) = conj G(k, Q), Ψ = Σ_k G (w(k, Q) + conj w(k, Q₋)) / 2,
        # Q₋ the frequency at the negated index; w(k, −Q) = conj w(k, Q) (γ(k, −Q) = −conj γ(k, Q), the
        # same double overlap), so that is w(k, Q) except where Q₋ ≠ −Q: the Nyquist row and column.
        half = ry // 2 + 1
        q, qn, nyq = half_plane(self.lattice)
        pix, w_all = filter_weights(self.state, np.concatenate([q, qn[nyq]]), "ssb", self.threshold)
        w = w_all[: len(q)].at[nyq].set(0.5 * (w_all[: len(q)][nyq] + jnp.conj(w_all[len(q) :])))
        nx, ny = g.pattern_shape
        # aperture pixels (FFT order) -> pixels of our centred patterns
        self._pix = np.fft.ifftshift(np.arange(nx * ny).reshape(nx, ny)).reshape(-1)[pix]
        wt = jnp.asarray(w).T  # (pixels, Q)
        ex = np.exp(-2j * np.pi * np.outer(np.arange(rx), np.fft.fftfreq(rx))).astype(np.complex64)  # (i, fi)
        ey = np.exp(-2j * np.pi * np.outer(np.arange(ry), np.fft.fftfreq(ry)[:half])).astype(np.complex64)
        consts = (jnp.real(wt), jnp.imag(wt), jnp.asarray(ex), jnp.asarray(ey))
        self._consts = [jax.device_put(consts, d) for d in self.devices]
        self._step = jax.jit(_ssb_step, donate_argnums=0)
        self._acc = []
        for d, c in zip(self.devices, self._consts):  # compiled here (at the start message), not on the first frames
            zero = jax.device_put((np.zeros((self.block, len(pix)), np.float32), np.zeros(self.block, np.int32), np.zeros(self.block, np.int32)), d)
            self._acc.append(self._step(jax.device_put(jnp.zeros((rx, half), jnp.complex64), d), *zero, *c))
        self._turn = 0
        self._dose = 0.0
        self._count = 0
        self._lock = threading.Lock()

    def update(self, indices: np.ndarray, patterns: np.ndarray) -> None:
        import jax

        b = len(indices)
        flat = patterns.reshape(b, -1)
        totals = float(flat.sum(dtype=np.int64)) if flat.dtype.kind in "ui" else float(flat.sum(dtype=np.float64))
        ap = flat[:, self._pix].astype(np.float32)
        ry = self.geometry.scan_shape[1]
        for lo in range(0, b, self.block):
            part = ap[lo : lo + self.block]
            idx = indices[lo : lo + self.block]
            m = len(idx)
            if m < self.block:  # padded with empty patterns: they add nothing
                part = np.concatenate([part, np.zeros((self.block - m, part.shape[1]), np.float32)])
                idx = np.concatenate([idx, np.zeros(self.block - m, idx.dtype)])
            i, j = (idx // ry).astype(np.int32), (idx % ry).astype(np.int32)
            k = self._turn % len(self.devices)
            self._turn += 1
            dev = self.devices[k]
            args = jax.device_put((part, i, j), dev)
            with self._lock:
                self._acc[k] = self._step(self._acc[k], *args, *self._consts[k])
        with self._lock:
            self._dose += totals
            self._count += b

    def spectrum(self) -> np.ndarray:
        """Φ(Q) (Rx, Ry // 2 + 1: the half plane, Φ(−Q) = conj Φ(Q)) of the frames so far (the
        devices' partial spectra summed), not yet divided by the dose."""
        with self._lock:
            parts = list(self._acc)
        return np.sum([np.asarray(a, np.complex128) for a in parts], axis=0)

    def phase(self) -> np.ndarray:
        with self._lock:
            dose = self._dose / self._count if self._count else 0.0
        if not dose > 0:
            return np.zeros(self.geometry.scan_shape, np.float32)
        phi = self.spectrum() / dose
        phi[0, 0] = 0.0
        return np.fft.irfft2(phi, s=self.geometry.scan_shape).astype(np.float32)

    def snapshot(self) -> dict[str, np.ndarray]:
        return {"ssb_phase": self.phase()}

    def finish(self, complete: bool) -> dict[str, Any]:
        import jax.numpy as jnp

        from ptyro_invert.direct._common import finish

        ph = self.phase()
        obj = np.asarray(finish(self.state, jnp.asarray(ph), self.lattice).object)
        return {"direct/ssb_phase": ph, "direct/ssb_object": obj, "direct/ssb_devices": np.asarray(len(self.devices))}


def _ssb_step(acc: Any, pats: Any, i: Any, j: Any, wr: Any, wi: Any, ex: Any, ey: Any) -> Any:
    """acc (Rx, Ry) + Σ_b e^{−2πi(fᵢ·i_b + fⱼ·j_b)} Σ_k I_b(k) w(k, Q): the patterns' (b, pixels)
    share of the spectrum, the phase ramp of each one's scan position as the outer product of its
    row and column factors."""
    import jax.numpy as jnp

    rx, half = acc.shape
    c = (pats @ wr + 1j * (pats @ wi)).reshape(-1, rx, half)  # (b, Q)
    return acc + jnp.einsum("bx,bxy,by->xy", ex[i], c, ey[j])


class LiveTCBF:
    """Tilt-corrected bright field (``ptyro_invert.direct.parallax``) on the frames so far: each
    frame's bright-field region (a window of the detector around the zero frequency holding the
    disc; the method uses nothing outside it) is kept as it arrives, and every ``every`` seconds
    (in a thread of its own) and at the end the parallax shifts are measured on those windows
    (``measure_shifts``; positions not yet received stand in as the mean window: no contrast),
    fitted (``fit_shifts``, within ``fit_radius`` of the disc, as ``fit_aberrations``) and the
    image placed on the object grid (``tcbf_image``); at the end the fit is refined as the
    offline one is (``refine_optics``: the exact transfer, and the search that guards a
    crystal's aliased shifts). At the end of the scan this is the offline ``parallax`` of the
    whole dataset (the contrast images are independent of the dose, the bins of the window are
    the detector's)."""

    name = "tcbf"

    def __init__(self, config: Mapping[str, Any], *, every: float = 2.0, fit_radius: float = 0.8, threshold: float = 0.5, **_: Any) -> None:
        self.config, self.every, self.fit_radius, self.threshold = config, float(every), float(fit_radius), float(threshold)

    def start(self, geometry: Geometry) -> None:
        from ptyro_core import Grid

        self.geometry = g = geometry
        self._grid, self._positions, self.state = live_state(self.config, g)
        lam = energy2wavelength(g.energy)
        r = g.semiangle_cutoff * 1e-3 / lam / min(g.reciprocal_sampling)  # disc radius in pixels
        nx, ny = g.pattern_shape
        h = min(int(np.ceil(1.2 * r)) + 2, nx // 2, ny // 2)
        self._win = (slice(nx // 2 - h, nx // 2 + h), slice(ny // 2 - h, ny // 2 + h))
        self._wgrid = Grid((2 * h, 2 * h), (1.0 / (2 * h * g.reciprocal_sampling[0]), 1.0 / (2 * h * g.reciprocal_sampling[1])))
        self._buf = np.zeros((g.size, 2 * h, 2 * h), np.float32)
        self._got = np.zeros(g.size, bool)
        self._lock = threading.Lock()
        self._count = self._done = 0
        self._phase: np.ndarray | None = None
        self._error: BaseException | None = None
        self._end = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ptyro-live-tcbf", daemon=True)
        self._thread.start()

    def update(self, indices: np.ndarray, patterns: np.ndarray) -> None:
        w = patterns[(slice(None), *self._win)]
        with self._lock:
            self._buf[indices] = w
            self._got[indices] = True
            self._count += len(indices)

    def _run(self, final: bool = False) -> None:
        from ptyro_core import Dataset4D
        from ptyro_invert.direct.parallax import measure_and_fit, refine_optics, tcbf_image

        with self._lock:
            data, got, n = self._buf.copy(), self._got.copy(), self._count
        if n < 2:
            return
        if not got.all():
            data[~got] = data[got].mean(axis=0)
        rx, ry = self.geometry.scan_shape
        ds = Dataset4D(data.reshape(rx, ry, *data.shape[1:]), self._positions, grid=self._wgrid, energy=self.geometry.energy)
        # the offline parallax's own measurement and fit (same defaults); at the end of the scan its
        # refinement too (the exact transfer and the search that guards a crystal's aliased shifts:
        # 0.1-0.6 s once), so that the end of the scan is the offline parallax's result
        measured, fit = measure_and_fit(ds, threshold=self.threshold, fit_radius=self.fit_radius)
        if final:
            fit = refine_optics(ds, fit, measured, threshold=self.threshold)
        phase, _ = tcbf_image(ds, self.state, fit, measured)
        self._phase, self._done, self.fit = np.asarray(phase), n, fit

    def _loop(self) -> None:
        try:
            while not self._end.wait(self.every):
                if self._count > self._done:
                    self._run()
        except BaseException as e:  # noqa: BLE001 - reported by finish(); the other processors keep going
            self._error = e

    def snapshot(self) -> dict[str, np.ndarray]:
        return {} if self._phase is None else {"tcbf_phase": self._phase}

    def finish(self, complete: bool) -> dict[str, Any]:
        self._end.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        self._run(final=True)
        if self._phase is None:
            return {}
        fit = self.fit
        return {"direct/tcbf_phase": self._phase, "direct/tcbf_defocus": np.asarray(fit.defocus), "direct/tcbf_rotation": np.asarray(fit.rotation)}


#: name -> function of the partial virtual images, for ``[live] direct``
METHODS = {"icom": live_icom}
#: name -> incremental processor (built from the configuration), for ``[live] direct``
INCREMENTAL = {"ssb": LiveSSB, "tcbf": LiveTCBF}

"""Direct phase retrieval: integrated centre of mass (``icom``), segmented-detector DPC (``dpc``), tilt-corrected bright field with
aberration fitting (``parallax``), single-sideband (``ssb``), optimum bright field (``obf``) and
Wigner-distribution deconvolution (``wdd``) ptychography.

Each is a registered component of kind ``reconstruction`` with the iterative methods' signature
``component(dataset, state, **options) -> ReconState``: the state's probe (its nominal optics)
is the transfer the method corrects for, and the result is the state with the object replaced
(one slice, exp(iφ) on the state's object grid, φ = 0 outside the scanned area), so that it is
written like any reconstruction and seeds an iterative one. ``parallax`` also fits the optics
(:func:`ptyro_invert.direct.parallax.fit_aberrations`), puts them into the probe and, with
``optics_out=PATH``, writes them as a TOML ``[probe]`` table that ``ptyro reconstruct
--optics-from PATH`` (or ``--config PATH``) starts from.

Every component takes ``mesh`` (one axis, e.g. :func:`ptyro_core.pipeline.device_mesh`): the
patterns are split over its devices along the scan and the per-frequency filters of SSB, OBF
and WDD over the spatial frequencies (``shard_map``); the result equals one device's to float32
round-off (``tests/test_invert_direct_sharding.py``).

The registered components ignore the iterative methods' options (``loss``, ``optimizer``,
``iterations``, ``batch_size``, ``seed``, ``progress``, ...), which the ``ptyro reconstruct``
pipeline passes to every algorithm, and refuse any other unknown option.
"""

import functools
import inspect
from collections.abc import Callable
from typing import Any

from ptyro_core import Dataset4D, PtyroValueError, ReconState
from ptyro_invert import plugin as _plugin
from ptyro_invert.direct import icom, parallax, ssb, wdd
from ptyro_invert.direct.icom import com_field, dpc_phase, icom_phase, icom_transfer, integrate_gradient
from ptyro_invert.direct.parallax import AberrationFit, fit_aberrations, fit_shifts, measure_shifts, write_optics
from ptyro_invert.direct.ssb import ssb_phase, transfer
from ptyro_invert.direct.wdd import wdd_object

# the modules keep their names (ptyro_invert.direct.parallax.fit_aberrations); the components
# are in COMPONENTS and the registry
__all__ = [
    "icom", "parallax", "ssb", "wdd", "COMPONENTS",
    "AberrationFit", "fit_aberrations", "fit_shifts", "measure_shifts", "write_optics",
    "com_field", "integrate_gradient", "icom_phase", "dpc_phase", "icom_transfer", "ssb_phase", "transfer", "wdd_object",
]  # fmt: skip

#: options of the iterative reconstructions that the pipeline passes to every algorithm
ITERATIVE_OPTIONS = frozenset({
    "loss", "optimizer", "iterations", "batch_size", "seed", "progress", "learning_rates", "fit_probe",
    "checkpoint", "resume", "checkpoint_every", "callback", "memory_budget", "report",
})  # fmt: skip


def _component(fn: Callable[..., ReconState]) -> Callable[..., ReconState]:
    accepted = [p for p in inspect.signature(fn).parameters if p not in ("dataset", "state")]

    @functools.wraps(fn)
    def run(dataset: Dataset4D, state: ReconState, **options: Any) -> ReconState:
        opts = {k: v for k, v in options.items() if k not in ITERATIVE_OPTIONS}
        unknown = sorted(set(opts) - set(accepted))
        if unknown:
            raise PtyroValueError(f"{fn.__name__}: unknown option {unknown[0]!r}; expected some of {', '.join(accepted)}")
        return fn(dataset, state, **opts)

    return run


icom_reconstruction = _component(icom.icom)
dpc_reconstruction = _component(icom.dpc)
parallax_reconstruction = _component(parallax.parallax)
ssb_reconstruction = _component(ssb.ssb)
obf_reconstruction = _component(ssb.obf)
wdd_reconstruction = _component(wdd.wdd)

#: name → (component, one-line description), registered by ``ptyro_invert.plugin`` (its table
#: ``DIRECT`` holds the names and descriptions)
COMPONENTS: dict[str, tuple[Callable[..., ReconState], str]] = {
    name: (globals()[ref.partition(":")[2]], description) for name, (ref, description) in _plugin.DIRECT.items()
}

"""Direct phase retrieval: integrated centre of mass (``icom``), tilt-corrected bright field with
aberration fitting (``parallax``), single-sideband (``ssb``), optimum bright field (``obf``) and
Wigner-distribution deconvolution (``wdd``) ptychography.

Each is a registered component of kind ``reconstruction`` with the iterative methods' signature
``component(dataset, state, **options) -> ReconState``: the state's probe (its nominal optics)
is the transfer the method corrects for, and the result is the state with the object replaced
(one slice, exp(iφ) on the state's object grid, φ = 0 outside the scanned area), so that it is
written like any reconstruction and seeds an iterative one. ``parallax`` also fits the optics
(:func:`ptyro_invert.direct.parallax.fit_aberrations`) and puts them into the probe.
"""

from ptyro_invert.direct.parallax import AberrationFit, fit_aberrations, fit_shifts, parallax

__all__ = ["AberrationFit", "fit_aberrations", "fit_shifts", "parallax"]

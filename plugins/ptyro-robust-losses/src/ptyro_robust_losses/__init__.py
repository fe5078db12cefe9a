"""ptyro-robust-losses: robust loss functions for ptyrodactyl (losses ``huber``, ``gaussian_poisson``)."""

from ptyro_core._lazy import lazy_getattr

__version__ = "0.1.0"
__all__ = ["huber", "huber_rho", "gaussian_poisson", "pixel_weights", "__version__"]

# imported on first use (PEP 562): the entry point (plugin.py) then imports no JAX for a listing
__getattr__ = lazy_getattr(__name__, dict.fromkeys(("gaussian_poisson", "huber", "huber_rho", "pixel_weights"), "ptyro_robust_losses.losses"))

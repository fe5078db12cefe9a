"""ptyro-robust-losses: robust loss functions for ptyrodactyl (losses ``huber``, ``gaussian_poisson``)."""

from ptyro_robust_losses.losses import gaussian_poisson, huber, huber_rho, pixel_weights

__version__ = "0.1.0"
__all__ = ["huber", "huber_rho", "gaussian_poisson", "pixel_weights", "__version__"]

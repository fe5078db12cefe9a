"""Entry point of ptyro-robust-losses: registers (lazily, by reference: listing imports nothing heavy) the losses ``huber`` and ``gaussian_poisson``."""

from ptyro_core import hookimpl


@hookimpl
def ptyro_register_losses(register):
    register("huber", "ptyro_robust_losses.losses:huber", description="Huber loss on amplitude residuals sqrt(I) (robust to outlier pixels)")
    register(
        "gaussian_poisson",
        "ptyro_robust_losses.losses:gaussian_poisson",
        description="Mixed Poisson-Gaussian (shot + read noise) deviance, shifted-Poisson approximation",
    )

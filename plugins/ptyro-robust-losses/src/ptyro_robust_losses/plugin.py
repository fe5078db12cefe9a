"""Entry point of ptyro-robust-losses: registers the losses ``huber`` and ``gaussian_poisson``."""

from ptyro_core import hookimpl


@hookimpl
def ptyro_register_losses(register):
    from ptyro_robust_losses.losses import gaussian_poisson, huber

    register("huber", huber, description="Huber loss on amplitude residuals sqrt(I) (robust to outlier pixels)")
    register(
        "gaussian_poisson",
        gaussian_poisson,
        description="Mixed Poisson-Gaussian (shot + read noise) deviance, shifted-Poisson approximation",
    )

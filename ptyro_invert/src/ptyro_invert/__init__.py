"""ptyro_invert: losses, complex (Wirtinger) optimizers and ptychographic reconstructions.

Public API: :func:`reconstruct`, :func:`initial_state`, :func:`save_checkpoint`,
:func:`load_checkpoint`, :func:`estimate_memory`, :func:`occupancies`,
:func:`predict_patterns`; the registered components are also importable from
:mod:`ptyro_invert.losses`, :mod:`ptyro_invert.optimizers` and :mod:`ptyro_invert.recon`.
"""

from ptyro_core._lazy import lazy_getattr

# imported on first use (PEP 562), so that importing ptyro_invert.plugin (the entry point, for
# ``ptyro plugins``) imports no JAX
_LAZY = {
    **dict.fromkeys(("load_checkpoint", "read_checkpoint", "save_checkpoint"), "ptyro_invert.checkpoint"),
    "predict_patterns": "ptyro_invert.forward",
    **dict.fromkeys(("amplitude_loss", "intensity_loss", "poisson_loss"), "ptyro_invert.losses"),
    **dict.fromkeys(
        ("adagrad", "adam", "apply_updates", "constant", "cosine_decay", "delayed", "descent_direction", "exponential_decay", "rmsprop", "sgd", "step_decay"),
        "ptyro_invert.optimizers",
    ),
    **dict.fromkeys(
        (
            "add_probe_modes", "estimate_memory", "initial_state", "mixed_state", "multislice", "occupancies",
            "orthogonalize_modes", "position_corrected", "reconstruct", "single_slice",
        ),
        "ptyro_invert.recon",
    ),
}  # fmt: skip

__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "reconstruct", "initial_state", "save_checkpoint", "load_checkpoint", "read_checkpoint", "estimate_memory",
    "occupancies", "predict_patterns", "add_probe_modes", "orthogonalize_modes",
    "single_slice", "position_corrected", "mixed_state", "multislice",
    "amplitude_loss", "intensity_loss", "poisson_loss",
    "sgd", "adam", "rmsprop", "adagrad", "descent_direction", "apply_updates",
    "constant", "exponential_decay", "cosine_decay", "step_decay", "delayed",
]  # fmt: skip

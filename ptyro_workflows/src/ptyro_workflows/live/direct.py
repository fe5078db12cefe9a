"""Direct methods of ``ptyro_invert.direct`` (the direct-phase issue) as live processors: each
``live_<name>(images, geometry) -> {name: image}`` works on the partial virtual images of
:class:`~ptyro_workflows.live.processors.VirtualDetectors` (plus ``received``, the (Rx, Ry)
mask) and is run by :class:`~ptyro_workflows.live.processors.DirectMethod` (``[live] direct =
["icom"]``).

``icom``: the live centre of mass (mrad → Å⁻¹), minus its mean over the received positions
(a constant descan), 0 where nothing arrived yet, integrated by
``ptyro_invert.direct.icom.integrate_gradient`` on the scan raster.
"""

from typing import Any

import numpy as np

from ptyro_core.conventions import energy2wavelength
from ptyro_workflows.live.processors import Geometry

__all__ = ["live_icom", "METHODS"]


def live_icom(images: dict[str, Any], geometry: Geometry, *, highpass: float = 0.0) -> dict[str, np.ndarray]:
    from ptyro_invert.direct.icom import integrate_gradient

    got = np.asarray(images["received"], bool)
    per_mrad = 1e-3 / energy2wavelength(geometry.energy)  # Å⁻¹ per mrad
    field = np.stack([np.asarray(images["com_x"]), np.asarray(images["com_y"])], -1) * per_mrad
    if got.any():
        field = np.where(got[..., None], field - field[got].mean(axis=0), 0.0)
    vectors = np.diag(np.asarray(geometry.scan_step, np.float64))
    return {"phase": np.asarray(integrate_gradient(field.astype(np.float32), vectors, highpass))}


#: name -> function, for ``[live] direct``
METHODS = {"icom": live_icom}

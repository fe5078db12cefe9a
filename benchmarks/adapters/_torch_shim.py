"""Make torchvision importable next to the CPU build of torch.

torchvision's wheels on the package index are linked against the CUDA build of torch, so with
the CPU torch its compiled ops (``_C.so``) cannot load; ``import torchvision`` then fails while
registering fake kernels for ``torchvision::nms``/``qnms``. Pty-chi and PtyRAD only use
torchvision's pure-Python transforms, so when (and only when) the ops library cannot load, we
declare those two operator schemas so the import succeeds. Import this before the library.
"""

import importlib.util
import os

import torch

_LIB = None


def apply() -> bool:
    global _LIB
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    so = os.path.join(list(spec.submodule_search_locations)[0], "_C.so")
    try:
        torch.ops.load_library(so)
        return False
    except Exception:
        pass
    _LIB = torch.library.Library("torchvision", "DEF")
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    return True


SHIMMED = apply()

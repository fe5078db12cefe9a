"""Test set-up for ptyro_workflows.

pytest's importlib import mode names these modules ``ptyro_workflows.tests.<name>`` and, when
``ptyro_workflows`` is not imported yet, registers the distribution's *folder*
(``/ptyro_workflows``, no ``__init__``) as a namespace package under that name, which hides the
installed package. Import the real package first (and replace a namespace stand-in).
"""

import importlib
import sys

_m = sys.modules.get("ptyro_workflows")
if _m is not None and getattr(_m, "__file__", None) is None:
    del sys.modules["ptyro_workflows"]
importlib.import_module("ptyro_workflows")

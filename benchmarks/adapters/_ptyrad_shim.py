"""Let PtyRAD 1.0.0 import on Python 3.11 (the only Python with a CPU torch wheel on this machine).

One module of PtyRAD, ``ptyrad/plotting/basic.py``, uses an f-string syntax that needs Python
3.12 (nested quotes). It only draws figures, which this benchmark never asks for (no saving,
no plots), so we register a stand-in module whose functions do nothing before PtyRAD is imported.
Nothing in the reconstruction path is replaced.
"""

import sys
import types


def _noop(*args, **kwargs):
    return None


def apply() -> bool:
    try:
        import ast
        import importlib.util

        spec = importlib.util.find_spec("ptyrad")
        path = list(spec.submodule_search_locations)[0] + "/plotting/basic.py"
        ast.parse(open(path).read())
        return False  # parses here: nothing to do
    except SyntaxError:
        pass
    mod = types.ModuleType("ptyrad.plotting.basic")
    def __getattr__(name):  # PEP 562: every public name (plot_*) is a no-op
        if name.startswith("__"):
            raise AttributeError(name)
        return _noop

    mod.__getattr__ = __getattr__
    mod.__file__ = path
    sys.modules["ptyrad.plotting.basic"] = mod
    return True


SHIMMED = apply()

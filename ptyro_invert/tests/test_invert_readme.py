import sys

# pytest's importlib mode names this file "ptyro_invert.tests.<name>" and may register the folder
# ptyro_invert/ as a namespace package "ptyro_invert" first; drop that placeholder so the real
# (installed) package is imported.
if not hasattr(sys.modules.get("ptyro_invert"), "__file__") or sys.modules["ptyro_invert"].__file__ is None:
    sys.modules.pop("ptyro_invert", None)

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 5  # setup + one example per algorithm
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    assert namespace["again"].object.shape[0] == 2

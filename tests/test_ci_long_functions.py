""".ci/long_functions.py: a library function over the limit fails the check unless a
``# long: <reason>`` comment sits on its def line or the line above."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "long_functions.py"
spec = importlib.util.spec_from_file_location("long_functions", SCRIPT)
assert spec is not None and spec.loader is not None
long_functions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(long_functions)


def write(root: Path, above: str = "", on_def: str = "", body: int = 101) -> None:
    src = root / "ptyro_x" / "src" / "ptyro_x"
    src.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"        x{i} = {i}\n" for i in range(body - 1))
    (src / "m.py").write_text(f"import functools\n\n\nclass C:\n{above}    @functools.cache\n    def f(self):{on_def}\n{lines}\n\ndef short():\n    return 1\n")


@pytest.mark.parametrize(
    ("above", "on_def", "body", "rc"),
    [
        ("", "", 101, 1),  # 101 lines, no reason
        ("", "", 100, 0),  # at the limit
        ("    # long: generated table\n", "", 101, 0),  # reason above the decorators
        ("", "  # long: generated table", 101, 0),  # reason on the def line
        ("    # long:\n", "", 101, 1),  # an empty reason is no reason
    ],
)
def test_limit_and_reasons(tmp_path, capsys, above, on_def, body, rc):
    write(tmp_path, above, on_def, body)
    assert long_functions.main(["--root", str(tmp_path)]) == rc
    out = capsys.readouterr().out
    assert f"{body:5d}" in out and "ptyro_x/src/ptyro_x/m.py:C.f" in out
    assert ("function(s) over 100 lines without a reason" in out) == bool(rc)

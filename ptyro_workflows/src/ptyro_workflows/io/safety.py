"""Output safety: every output path is checked before a run starts (never an input, never
another output, never replaced without ``overwrite``), and written atomically (a temporary file
in the target directory, renamed into place only when the block succeeds)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ptyro_core import PtyroValueError
from ptyro_core.files import remove_stale_temporaries, same_file, temporary_path

__all__ = ["check_output", "check_outputs", "atomic_output"]


def check_output(path: str | Path, overwrite: bool = False, *, inputs: Any = (), what: str = "output") -> Path:
    """Raise unless ``path`` can be written: its directory exists, it is not the same file as
    any of ``inputs`` (never, even with ``overwrite``: that would destroy the input), and it does
    not exist already (or ``overwrite``). Temporaries of ``path`` left by dead processes of this
    host (SIGKILL, out-of-memory kills) are removed on the way."""
    p = Path(path)
    for src in inputs:
        if src is not None and (same_file(p, src) or (not p.exists() and Path(os.path.abspath(p)) == Path(os.path.abspath(src)))):
            raise PtyroValueError(f"{what} {str(p)!r} is the same file as the input {str(src)!r}; expected a different path (the input would be destroyed)")
    if p.exists() and p.is_dir():
        raise PtyroValueError(f"{what} {str(p)!r} is a directory; expected a file path")
    if p.exists() and not overwrite:
        hint = f", or --resume {str(p)!r} to continue from it" if what == "checkpoint" else ""
        raise PtyroValueError(f"{what} {str(p)!r} exists; pass --overwrite (overwrite=True) to replace it{hint}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise PtyroValueError(f"{what} directory {str(parent)!r} does not exist; create it first")
    remove_stale_temporaries(p)
    return p


def check_outputs(outputs: Mapping[str, Any], *, overwrite: bool = False, inputs: Any = ()) -> None:
    """:func:`check_output` for every ``{what: path}`` (None skipped), and no two of them the
    same file: every output path goes through here before a run starts."""
    seen: dict[str, str] = {}
    for what, path in outputs.items():
        if path is None:
            continue
        key = os.path.realpath(path)
        if key in seen:
            raise PtyroValueError(f"{what} {str(path)!r} is the same file as the {seen[key]}; expected different paths")
        seen[key] = what
        check_output(path, overwrite, inputs=inputs, what=what)


@contextlib.contextmanager
def atomic_output(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds,
    delete it when the block fails."""
    p = check_output(path, overwrite)
    tmp = temporary_path(p)
    try:
        yield tmp
        if p.exists() and not overwrite:  # appeared meanwhile
            raise PtyroValueError(f"output {str(p)!r} exists; pass --overwrite (overwrite=True) to replace it")
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()

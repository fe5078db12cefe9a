"""Progress bars (tqdm) for long loops, switchable off (``progress=False``, ``--no-progress``)."""

from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(iterable: Any = None, *, desc: str = "", total: int | None = None, unit: str = "it", disable: bool = False, **kw: Any) -> Any:
    """A tqdm bar on stderr; a no-op when ``disable``."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, leave=False, dynamic_ncols=True, **kw)

"""Progress bars (tqdm) for long loops, switchable off (``progress=False``, ``--no-progress``):
:func:`ptyro_core.progress.progress_bar`, in place on a terminal, a line at a time in a log."""

from ptyro_core.progress import progress_bar

__all__ = ["progress_bar"]

"""Entry point of ptyro-workflows: its built-in readers and live sources, registered through the
same hooks (``ptyro_register_readers``, ``ptyro_register_sources``) as any plugin's."""

from ptyro_workflows.live.plugin import ptyro_register_sources
from ptyro_workflows.readers.plugin import ptyro_register_readers

__all__ = ["ptyro_register_readers", "ptyro_register_sources"]

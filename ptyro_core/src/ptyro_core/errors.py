"""Exceptions of ptyrodactyl. Every message names the bad value and what was expected."""

__all__ = [
    "PtyroError",
    "PtyroValueError",
    "PtyroTypeError",
    "UnknownComponentError",
    "DuplicateComponentError",
    "PluginError",
    "MemoryBudgetError",
]


class PtyroError(Exception):
    """Base class of every error raised by ptyrodactyl."""


class PtyroValueError(PtyroError, ValueError):
    """A value is out of its physical or logical range."""


class PtyroTypeError(PtyroError, TypeError):
    """A value has the wrong type, dtype or shape."""


class UnknownComponentError(PtyroError, LookupError):
    """No component of that kind is registered under that name."""


class DuplicateComponentError(PtyroError):
    """Two distributions registered the same kind and name."""


class PluginError(PtyroError):
    """A plugin failed to import, raised in its hook, or registered something invalid."""


class MemoryBudgetError(PtyroError, MemoryError):
    """A run would not fit in memory; the message names the knob to turn."""

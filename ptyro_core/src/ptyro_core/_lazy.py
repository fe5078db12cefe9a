"""Lazy package attributes (PEP 562), so that importing a package for its light parts (errors,
configuration) does not import JAX."""

import importlib
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, table: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``table[name]`` (a module) on the
    first access of ``name`` and keeps the value in the package's namespace."""

    def __getattr__(name: str) -> Any:
        mod = table.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(mod), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


def lazy_package(package: str, table: Mapping[str, str]) -> None:
    """Make each ``name`` of ``table`` a lazy attribute of ``package`` (imported from the module
    ``table[name]`` on first access), also where a submodule has the same name as the attribute
    (``ptyro_prism.prism``, the component, and ``ptyro_prism.prism``, its module): the binding of
    the submodule that the import system makes on the submodule's first import is ignored, any
    other assignment (``monkeypatch.setattr``) is kept."""
    module = sys.modules[package]

    def attribute(name: str, where: str) -> property:
        def get(self: types.ModuleType) -> Any:
            if name not in self.__dict__:
                self.__dict__[name] = getattr(importlib.import_module(where), name)
            return self.__dict__[name]

        def put(self: types.ModuleType, value: Any) -> None:
            if not (isinstance(value, types.ModuleType) and value.__name__ == f"{package}.{name}"):
                self.__dict__[name] = value

        return property(get, put)

    module.__class__ = type("LazyPackage", (types.ModuleType,), {n: attribute(n, w) for n, w in table.items()})

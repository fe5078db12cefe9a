"""attrs classes as JAX PyTrees.

Array fields are leaves; fields declared with :func:`static_field` are static metadata
(hashable Python values: floats, ints, strings, tuples, other static PyTree classes).

Unflattening bypasses ``__init__`` (as equinox does), so tracers, stacked arrays and
``vmap``'s ``in_axes`` integers pass through untouched, while user construction goes through
``__init__`` and its checks.
"""

from typing import Any

import attrs
import jax
import numpy as np

__all__ = ["pytree", "static_field", "is_tracer", "replace"]

_STATIC = "ptyro_static"


def static_field(**kwargs: Any) -> Any:
    """An attrs field that is static PyTree metadata (hashable, not traced)."""
    metadata = dict(kwargs.pop("metadata", {}) or {})
    metadata[_STATIC] = True
    return attrs.field(metadata=metadata, **kwargs)


def is_tracer(x: Any) -> bool:
    """True when ``x`` is a JAX tracer (inside jit/vmap/grad), where values cannot be checked."""
    return isinstance(x, jax.core.Tracer)


def pytree(cls: type) -> type:
    """Register an attrs class as a PyTree with keys (leaf fields and static fields)."""
    fields = attrs.fields(cls)
    leaf_names = tuple(f.name for f in fields if not f.metadata.get(_STATIC))
    static_names = tuple(f.name for f in fields if f.metadata.get(_STATIC))

    def flatten_with_keys(obj: Any) -> tuple:
        children = tuple((jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in leaf_names)
        aux = tuple(getattr(obj, n) for n in static_names)
        return children, aux

    def flatten(obj: Any) -> tuple:
        return tuple(getattr(obj, n) for n in leaf_names), tuple(getattr(obj, n) for n in static_names)

    def unflatten(aux: tuple, children: Any) -> Any:
        obj: Any = object.__new__(cls)
        for n, v in zip(leaf_names, children):
            object.__setattr__(obj, n, v)
        for n, v in zip(static_names, aux):
            object.__setattr__(obj, n, v)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    cls.__repr__ = _concise_repr  # type: ignore[method-assign,assignment]  # arrays as dtype[shape], not their values
    cls._repr_html_ = _html_repr  # type: ignore[attr-defined]  # the same as a table in notebooks
    cls.__ptyro_leaves__ = leaf_names  # type: ignore[attr-defined]
    cls.__ptyro_static__ = static_names  # type: ignore[attr-defined]
    return cls


def _fields(obj: Any) -> list[tuple[str, str]]:
    out = []
    for n in type(obj).__ptyro_leaves__ + type(obj).__ptyro_static__:
        v = getattr(obj, n, None)
        text = describe(v) if hasattr(v, "shape") and hasattr(v, "dtype") else repr(v)
        out.append((n, text if len(text) <= 80 else text[:77] + "..."))
    return out


def _concise_repr(obj: Any) -> str:
    return f"{type(obj).__name__}(" + ", ".join(f"{n}={t}" for n, t in _fields(obj)) + ")"


def _html_repr(obj: Any) -> str:
    import html

    rows = "".join(
        f"<tr><td style='text-align:left'><code>{html.escape(n)}</code></td><td style='text-align:left'>{html.escape(t)}</td></tr>" for n, t in _fields(obj)
    )
    return f"<b>{html.escape(type(obj).__name__)}</b><table>{rows}</table>"


def replace(obj: Any, **changes: Any) -> Any:
    """A copy of ``obj`` with some fields changed, without re-running the checks.

    Safe inside ``jit`` (the checks of ``__init__`` are for user construction).
    """
    cls = type(obj)
    names = cls.__ptyro_leaves__ + cls.__ptyro_static__
    unknown = set(changes) - set(names)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {sorted(unknown)}; fields are {list(names)}")
    new = object.__new__(cls)
    for n in names:
        object.__setattr__(new, n, changes.get(n, getattr(obj, n)))
    return new


def describe(x: Any) -> str:
    """Short description of a value for error messages: dtype[shape] for arrays."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"{np.dtype(x.dtype).name}{list(x.shape)}"
    return f"{type(x).__name__} {x!r}"

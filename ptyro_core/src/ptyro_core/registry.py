"""The component registry: plugins discovered through the entry-point group ``ptyrodactyl``.

Discovery is lazy and happens once (the first lookup). Each hook implementation is called on its
own with a ``register`` callable, so every component is recorded with the distribution and
version behind it. A component is registered either as the object itself (eager) or as a
``"module:attribute"`` reference with its name, kind and description (lazy): a lazy component is
imported and checked on first use, so listing the components (``ptyro plugins``) imports none of
them, and no JAX. Third-party faults are data, not crashes: a plugin that fails to import,
raises in its hook, registers something that is not a component of its kind, or claims a name
another distribution already claimed is recorded as *broken* with its error; the rest keeps
working. The library API is strict (``get`` raises on a broken, clashing or unknown name); the
listing (``ptyro plugins``) is resilient; a lazy component that fails to import or is not a
component of its kind is found when it is first used (or by :meth:`Registry.resolve_all`, which
``ptyro plugins --strict`` runs) and is then recorded as broken like any other.

Environment switches: ``PTYRO_DISABLE_PLUGINS=a,b`` skips those entry points / distributions;
``PTYRO_LOAD_PLUGINS=a,b`` loads only those (empty: none).
"""

import difflib
import functools
import importlib
import importlib.metadata as md
import os
import re
import traceback
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import pluggy

from ptyro_core import hookspecs
from ptyro_core.errors import DuplicateComponentError, PluginError, UnknownComponentError
from ptyro_core.hookspecs import HOOKS, KINDS, PROJECT

__all__ = [
    "ENTRY_POINT_GROUP",
    "Component",
    "BrokenPlugin",
    "Registry",
    "get_registry",
    "reset_registry",
    "get",
    "list_components",
    "register_plugin",
    "import_reference",
]

ENTRY_POINT_GROUP = "ptyrodactyl"
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_REFERENCE_RE = re.compile(rf"^{_DOTTED}:{_DOTTED}$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@attrs.frozen
class Component:
    """A registered component: what it is, and who registered it.

    ``obj`` is the component itself; for one registered lazily (``reference`` is its
    ``"module:attribute"``) the first access imports and checks it (raising
    :class:`~ptyro_core.errors.PluginError` if it cannot be used).
    """

    kind: str
    name: str
    description: str
    distribution: str
    version: str
    reference: str | None = None
    _load: Callable[[], Any] = attrs.field(default=None, repr=False, eq=False, alias="load")

    @property
    def obj(self) -> Any:
        return self._load()

    def as_dict(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "name": self.name,
            "description": self.description,
            "distribution": self.distribution,
            "version": self.version,
        }


@attrs.frozen
class BrokenPlugin:
    """A plugin (or one of its components) that was left out, and why."""

    plugin: str
    distribution: str
    version: str
    error: str
    kind: str | None = None
    name: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _env_list(var: str) -> set[str] | None:
    raw = os.environ.get(var)
    if raw is None:
        return None
    return {_norm(s.strip()) for s in raw.split(",") if s.strip()}


def _short_error(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _reraise_interrupt(exc: BaseException) -> None:
    """Ctrl-C (and SIGTERM, which ``ptyro`` turns into an interrupt) stops the program even while
    a plugin is imported; any other BaseException of a plugin (``sys.exit``, ``GeneratorExit``) is
    contained like an Exception."""
    if isinstance(exc, KeyboardInterrupt):
        raise exc


class Registry:
    """Components by kind and name, fed by pluggy hooks.

    ``Registry(entry_points=False)`` gives an empty registry for runtime registration only.
    """

    def __init__(self, *, entry_points: bool = True) -> None:
        self._use_entry_points = entry_points
        self._pm = pluggy.PluginManager(PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._components: dict[tuple[str, str], Component] = {}
        self._objects: dict[tuple[str, str], Any] = {}  # lazy components once imported
        self._plugin_of: dict[tuple[str, str], str] = {}
        self._aliases: dict[tuple[str, str], str] = {}
        self._broken: list[BrokenPlugin] = []
        self._clashes: dict[tuple[str, str], list[str]] = {}
        self._runtime: set[str] = set()  # plugins registered at run time (register_plugin)
        self._loaded = False

    @property
    def runtime_plugins(self) -> frozenset[str]:
        """The names of the plugins registered at run time (:meth:`register_plugin`): code that
        no installed distribution holds (a notebook's, a script's)."""
        return frozenset(self._runtime)

    # ------------------------------------------------------------------ discovery

    def load(self) -> "Registry":
        """Discover entry points once (idempotent)."""
        if self._loaded:
            return self
        self._loaded = True
        if not self._use_entry_points:
            return self
        disabled = _env_list("PTYRO_DISABLE_PLUGINS") or set()
        allowed = _env_list("PTYRO_LOAD_PLUGINS")
        seen: set[tuple[str, str]] = set()
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else ep.name
            version = ep.dist.version if ep.dist is not None else "?"
            keys = {_norm(ep.name), _norm(dist)}
            if keys & disabled or (allowed is not None and not keys & allowed):
                continue
            if (ep.name, dist) in seen:  # the same distribution seen twice on sys.path
                continue
            seen.add((ep.name, dist))
            try:
                plugin = ep.load()
            except BaseException as e:  # noqa: BLE001 - third-party faults are data (sys.exit at import too)
                _reraise_interrupt(e)
                self._broken.append(BrokenPlugin(ep.name, dist, version, f"failed to import {ep.value!r}: {_short_error(e)}"))
                continue
            self._add(plugin, ep.name, dist, version)
        return self

    def register_plugin(self, plugin: Any, name: str | None = None, *, distribution: str | None = None, version: str = "runtime") -> None:
        """Register a plugin object (module or instance with hookimpls) at run time.

        For notebooks and tests; its components are recorded under ``distribution`` (default:
        the plugin name). Raises PluginError if it registers nothing valid.
        """
        self.load()
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        before = len(self._broken)
        self._runtime.add(name)
        self._add(plugin, name, distribution or name, version)
        if len(self._broken) > before:
            errs = "; ".join(b.error for b in self._broken[before:])
            raise PluginError(f"plugin {name!r}: {errs}")

    def unregister_plugin(self, name: str) -> None:
        """Remove a plugin registered at run time (and its components)."""
        self._pm.unregister(name=name)
        self._runtime.discard(name)
        self._components = {k: c for k, c in self._components.items() if c.distribution != name}
        self._objects = {k: o for k, o in self._objects.items() if k in self._components}
        self._plugin_of = {k: p for k, p in self._plugin_of.items() if k in self._components}
        self._broken = [b for b in self._broken if b.plugin != name]

    def _add(self, plugin: Any, plugin_name: str, dist: str, version: str) -> None:
        try:
            self._pm.register(plugin, name=plugin_name)
        except BaseException as e:  # noqa: BLE001 (pluggy validation errors, double registration)
            _reraise_interrupt(e)
            self._broken.append(BrokenPlugin(plugin_name, dist, version, f"not a valid plugin: {_short_error(e)}"))
            return
        for caller in self._pm.get_hookcallers(plugin) or []:
            if caller.spec is None and caller.name.startswith("ptyro_"):
                close = difflib.get_close_matches(caller.name, list(HOOKS.values()), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self._broken.append(BrokenPlugin(plugin_name, dist, version, f"unknown hook {caller.name!r}{hint}"))
        for kind, hook_name in HOOKS.items():
            hook = getattr(self._pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                if impl.plugin_name != plugin_name:
                    continue
                register = functools.partial(self._register_one, kind, plugin_name, dist, version)
                try:
                    impl.function(register=register)
                except BaseException as e:  # noqa: BLE001 - SystemExit from a hook is contained too
                    _reraise_interrupt(e)
                    self._broken.append(BrokenPlugin(plugin_name, dist, version, f"{hook_name} raised {_short_error(e)}", kind))

    def _register_one(
        self,
        kind: str,
        plugin: str,
        dist: str,
        version: str,
        name: Any,
        component: Any,
        *,
        description: str = "",
        aliases: Iterable[str] = (),
    ) -> None:
        """``register(name, component, *, description="", aliases=())``: ``component`` is the
        object (checked now) or a ``"module:attribute"`` string (imported and checked on first use)."""

        def broken(msg: str) -> None:
            self._broken.append(BrokenPlugin(plugin, dist, version, msg, kind, str(name)))

        if not isinstance(name, str) or not _NAME_RE.match(name):
            return broken(f"invalid {kind} name {name!r}: expected a string of letters, digits, '_', '-', '.' starting with a letter")
        if not isinstance(description, str):
            return broken(f"{kind} {name!r}: description must be a string, got {type(description).__name__}")
        reference = component if isinstance(component, str) else None
        if reference is not None:
            if not _REFERENCE_RE.match(reference):
                return broken(
                    f"{kind} {name!r} is not a valid {kind}: the string {reference!r} is not a 'package.module:attribute' reference (expected one, or the component itself)"
                )
        else:
            error = _check(kind, name, component)
            if error:
                return broken(error)
        key = (kind, name)
        if key in self._clashes:
            self._clashes[key].append(dist)
            return broken(f"{kind} {name!r} is claimed by several distributions: {', '.join(self._clashes[key])}")
        if key in self._components:
            other = self._components.pop(key)
            self._clashes[key] = [other.distribution, dist]
            msg = f"{kind} {name!r} is registered by both {other.distribution!r} and {dist!r}; neither is used (uninstall one, or disable it with PTYRO_DISABLE_PLUGINS)"
            self._broken.append(BrokenPlugin(other.distribution, other.distribution, other.version, msg, kind, name))
            return broken(msg)
        load = functools.partial(self._resolve, key) if reference is not None else functools.partial(_identity, component)
        self._components[key] = Component(kind, name, description.strip(), dist, version, reference, load=load)
        self._plugin_of[key] = plugin
        for alias in aliases:
            self._aliases[(kind, alias)] = name

    def _resolve(self, key: tuple[str, str]) -> Any:
        """Import and check the lazy component ``key`` (once); on failure it is recorded as
        broken, left out, and PluginError is raised."""
        if key in self._objects:
            return self._objects[key]
        kind, name = key
        comp = self._components.get(key)
        if comp is None or comp.reference is None:  # left out meanwhile (a clash, or broken)
            return self.get(kind, name)
        error: str | None
        try:
            obj = import_reference(comp.reference)
        except BaseException as e:  # noqa: BLE001 - third-party faults are data
            _reraise_interrupt(e)
            error = f"{kind} {name!r}: failed to import {comp.reference!r}: {_short_error(e)}"
        else:
            error = _check(kind, name, obj)
            if not error:
                self._objects[key] = obj
                return obj
        plugin = self._plugin_of.get(key, comp.distribution)
        del self._components[key]
        self._broken.append(BrokenPlugin(plugin, comp.distribution, comp.version, error, kind, name))
        raise PluginError(f"{kind} {name!r} from plugin {plugin!r} ({comp.distribution}) is broken: {error}")

    def resolve_all(self) -> "Registry":
        """Import and check every lazily registered component now (what ``ptyro plugins
        --strict`` does), so that a bad reference shows in :attr:`broken`."""
        self.load()
        for key, comp in list(self._components.items()):
            if comp.reference is not None:
                try:
                    self._resolve(key)
                except PluginError:
                    pass
        return self

    # ------------------------------------------------------------------ lookup

    def get(self, kind: str, name: str) -> Any:
        """The component of ``kind`` named ``name``; raises a clear error otherwise."""
        return self.component(kind, name).obj

    def component(self, kind: str, name: str) -> Component:
        """The :class:`Component` record (object, description, distribution, version)."""
        self.load()
        if kind not in HOOKS:
            close = difflib.get_close_matches(str(kind), KINDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownComponentError(f"unknown component kind {kind!r}: expected one of {', '.join(KINDS)}{hint}")
        name = self._aliases.get((kind, name), name)
        key = (kind, name)
        if key in self._components:
            comp = self._components[key]
            if comp.reference is not None:
                self._resolve(key)  # imported and checked on first use
            return comp
        if key in self._clashes:
            raise DuplicateComponentError(
                f"{kind} {name!r} is registered by several distributions: {', '.join(self._clashes[key])}; "
                "uninstall one or disable it with PTYRO_DISABLE_PLUGINS"
            )
        bad = [b for b in self._broken if b.kind == kind and b.name == name]
        if bad:
            raise PluginError(f"{kind} {name!r} from plugin {bad[0].plugin!r} ({bad[0].distribution}) is broken: {bad[0].error}")
        known = sorted(n for (k, n) in self._components if k == kind)
        close = difflib.get_close_matches(str(name), known, n=1)
        msg = f"unknown {kind} {name!r}; known {kind}s: {', '.join(known) if known else '(none registered)'}"
        if close:
            msg += f"; closest match: {close[0]!r}"
        failed = [b for b in self._broken if b.name is None]
        if failed:
            msg += "; plugins that failed to load: " + "; ".join(f"{b.plugin} ({b.error})" for b in failed)
        raise UnknownComponentError(msg)

    def blame(self, exc: BaseException) -> tuple[Component | None, str | None]:
        """Which registered component an exception came from, by its traceback: the innermost
        frame that runs a component's own function gives ``(component, distribution)``; else the
        innermost frame in a package that registers components gives ``(None, distribution)``;
        else ``(None, None)``."""
        self.load()
        by_code: dict[Any, Component] = {}
        by_package: dict[str, str] = {}
        for key, c in self._components.items():
            if c.reference is not None:  # a lazy one: its package is known without importing it
                if key in self._objects:
                    _code_of(self._objects[key], c, by_code)
                module = c.reference.partition(":")[0]
            else:
                obj = c.obj
                _code_of(obj, c, by_code)
                module = getattr(obj, "__module__", None) or type(obj).__module__
            if module and not module.startswith(("ptyro_core", "builtins")):
                by_package.setdefault(module.split(".")[0], c.distribution)
        frames = [f for f, _ in traceback.walk_tb(exc.__traceback__)]
        for frame in reversed(frames):
            if frame.f_code in by_code:
                return by_code[frame.f_code], by_code[frame.f_code].distribution
        for frame in reversed(frames):
            top = str(frame.f_globals.get("__name__", "")).split(".")[0]
            if top in by_package:
                return None, by_package[top]
        return None, None

    def describe(self, kind: str, name: str) -> str:
        """``kind 'name' (distribution version)`` for messages (``kind 'name'`` if unknown)."""
        try:
            c = self.component(kind, name)
        except Exception:  # noqa: BLE001 - a description never fails
            return f"{kind} {name!r}"
        return f"{kind} {name!r} ({c.distribution} {c.version})"

    def names(self, kind: str) -> list[str]:
        self.load()
        return sorted(n for (k, n) in self._components if k == kind)

    def components(self, kind: str | None = None) -> list[Component]:
        """Every healthy component, ordered by kind then name."""
        self.load()
        order = {k: i for i, k in enumerate(KINDS)}
        comps = [c for c in self._components.values() if kind is None or c.kind == kind]
        return sorted(comps, key=lambda c: (order[c.kind], c.name))

    @property
    def broken(self) -> list[BrokenPlugin]:
        """Plugins and components that were left out, with their errors."""
        self.load()
        return list(self._broken)

    def check(self) -> None:
        """Raise PluginError if any plugin is broken, every lazy component imported and checked
        first (strict mode for applications and CI)."""
        self.resolve_all()
        if self.broken:
            raise PluginError("broken plugins: " + "; ".join(f"{b.plugin}: {b.error}" for b in self._broken))

    def as_json(self) -> dict[str, Any]:
        """The listing of ``ptyro plugins --json``."""
        return {
            "components": [c.as_dict() for c in self.components()],
            "broken": [b.as_dict() for b in self.broken],
        }


def import_reference(reference: str) -> Any:
    """The object a ``"package.module:attribute"`` reference names (the attribute may be
    dotted: ``"module:Class.method"``)."""
    module, _, attr = reference.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _identity(obj: Any) -> Any:
    return obj


def _check(kind: str, name: str, component: Any) -> str | None:
    """Why ``component`` is not a valid ``kind`` (None: it is). The protocols (and JAX, which
    their types import) are imported only here, when a component is checked."""
    from ptyro_core.protocols import check_component

    try:
        check_component(kind, component)
    except TypeError as e:
        return f"{kind} {name!r} is not a valid {kind}: {e}"
    return None


def _code_of(obj: Any, comp: Component, by_code: dict[Any, Component]) -> None:
    fn = obj if hasattr(obj, "__code__") else getattr(type(obj), "__call__", None)  # noqa: B004 - the method object, not a callability test
    code = getattr(fn, "__code__", None)
    if code is not None:
        by_code.setdefault(code, comp)


@functools.cache
def get_registry() -> Registry:
    """The process-wide registry (entry points discovered on first use)."""
    return Registry()


def reset_registry() -> None:
    """Forget the process-wide registry, so the next lookup rediscovers entry points."""
    get_registry.cache_clear()
    importlib.invalidate_caches()


def get(kind: str, name: str) -> Any:
    """Shortcut for ``get_registry().get(kind, name)``."""
    return get_registry().get(kind, name)


def list_components(kind: str | None = None) -> list[Component]:
    """Shortcut for ``get_registry().components(kind)``."""
    return get_registry().components(kind)


def register_plugin(plugin: Any, name: str | None = None, **kwargs: Any) -> None:
    """Shortcut for ``get_registry().register_plugin(plugin, name)``."""
    get_registry().register_plugin(plugin, name, **kwargs)

"""Every hook of ptyro_core.hookspecs, exercised through a genuine entry point: a fake installed
distribution implementing one hook is discovered, its component is recorded with the
distribution and version, and a component of the wrong shape is reported as broken by name."""

import pytest

import ptyro_core

# one minimal, valid component per hook (source code of the plugin module)
COMPONENTS = {
    "ptyro_register_potentials": ("potential", "def comp(atoms, grid, *, slice_thickness, projection='infinite'):\n    return None"),
    "ptyro_register_propagators": ("propagator", "def comp(wave, dz, grid, energy, *, tilt=(0.0, 0.0)):\n    return wave"),
    "ptyro_register_probes": ("probe", "def comp(grid, energy, *, semiangle_cutoff, aberrations=None):\n    return None"),
    "ptyro_register_losses": ("loss", "def comp(predicted, measured, *, mask=None, weights=None):\n    return 0.0"),
    "ptyro_register_optimizers": ("optimizer", "def comp(learning_rate=0.1):\n    return None"),
    "ptyro_register_reconstructions": ("reconstruction", "def comp(dataset, state, **options):\n    return state"),
    "ptyro_register_simulators": ("simulator", "def comp(potential, probe, **options):\n    return lambda positions: positions"),
    "ptyro_register_sources": ("source", "def comp(address, **options):\n    return iter(())"),
    "ptyro_register_backends": ("backend", "def comp(waves, head, last, offsets=None):\n    return waves"),
    "ptyro_register_readers": ("reader", "def comp(path, *, lazy=True):\n    return {'array': None, 'calibration': {}}"),
}


def _source(hook: str, body: str, name: str = "hooktest") -> str:
    return f"from ptyro_core import hookimpl\n\n{body}\n\n@hookimpl\ndef {hook}(register):\n    register({name!r}, comp, description='via {hook}')\n"


def test_every_hook_is_covered_here():
    from ptyro_core.hookspecs import HOOKS

    assert set(COMPONENTS) == set(HOOKS.values())


@pytest.mark.parametrize("hook", sorted(COMPONENTS))
def test_hook_registers_through_an_entry_point(fake_distribution, hook):
    kind, body = COMPONENTS[hook]
    fake_distribution("ptyro-hooktest", _source(hook, body), version="1.2.3")
    comp = ptyro_core.get_registry().component(kind, "hooktest")
    assert (comp.distribution, comp.version, comp.description) == ("ptyro-hooktest", "1.2.3", f"via {hook}")


@pytest.mark.parametrize("hook", sorted(COMPONENTS))
def test_hook_rejects_a_non_component(fake_distribution, hook):
    kind, _ = COMPONENTS[hook]
    fake_distribution("ptyro-badhook", _source(hook, "comp = 42"))
    reg = ptyro_core.get_registry()
    with pytest.raises(ptyro_core.PluginError, match="ptyro-badhook|badhook"):
        reg.get(kind, "hooktest")
    assert any(b.kind == kind and b.name == "hooktest" for b in reg.broken)


# ------------------------------------------------------------------ the lazy form: "module:attribute"


def _lazy_source(hook: str, module: str, name: str = "hooktest") -> str:
    return f"from ptyro_core import hookimpl\n\n\n@hookimpl\ndef {hook}(register):\n    register({name!r}, '{module}:comp', description='lazy via {hook}')\n"


@pytest.mark.parametrize("hook", sorted(COMPONENTS))
def test_hook_registers_a_reference_imported_on_first_use(fake_distribution, hook):
    """Listing a lazily registered component imports nothing of it; the first use imports and
    checks it, and gives the very object the reference names."""
    import sys

    kind, body = COMPONENTS[hook]
    module = f"lazy_{kind}_impl"
    info = fake_distribution("ptyro-lazyhook", _lazy_source(hook, module), version="2.0")
    (info.parent / f"{module}.py").write_text(body + "\n")
    try:
        reg = ptyro_core.get_registry()
        listed = {(c.kind, c.name): c for c in reg.components()}
        assert (kind, "hooktest") in listed and listed[(kind, "hooktest")].reference == f"{module}:comp"
        assert module not in sys.modules, "listing imported the component"
        comp = reg.component(kind, "hooktest")
        assert (comp.distribution, comp.version, comp.description) == ("ptyro-lazyhook", "2.0", f"lazy via {hook}")
        assert comp.obj is sys.modules[module].comp
        assert reg.get(kind, "hooktest") is comp.obj
    finally:
        sys.modules.pop(module, None)


@pytest.mark.parametrize("hook", sorted(COMPONENTS))
def test_hook_reference_to_a_non_component_is_broken_on_first_use(fake_distribution, hook):
    kind, _ = COMPONENTS[hook]
    fake_distribution("ptyro-lazybad", _lazy_source(hook, "ptyro_lazybad") + "\ncomp = 42\n")
    reg = ptyro_core.get_registry()
    assert [c.name for c in reg.components(kind) if c.distribution == "ptyro-lazybad"] == ["hooktest"]  # listed: not imported yet
    with pytest.raises(ptyro_core.PluginError, match=rf"{kind} 'hooktest' from plugin 'ptyro-lazybad'.*is not a valid {kind}"):
        reg.get(kind, "hooktest")
    assert any(b.kind == kind and b.name == "hooktest" for b in reg.broken)
    assert "hooktest" not in [c.name for c in reg.components(kind) if c.distribution == "ptyro-lazybad"]


def test_a_reference_that_does_not_import_is_found_by_strict_listing(fake_distribution):
    """``ptyro plugins --strict`` (Registry.check) imports every reference: a missing module or
    attribute is reported by name; the plain listing stays import-free and lists it."""
    source = (
        "from ptyro_core import hookimpl\n\n\n@hookimpl\ndef ptyro_register_losses(register):\n"
        "    register('gone', 'no_such_module_xyz:loss', description='a missing module')\n"
        "    register('typo', 'ptyro_lazymiss:lsos', description='a missing attribute')\n"
        "    register('fine', 'ptyro_lazymiss:loss', description='a loss')\n\n\n"
        "def loss(predicted, measured, *, mask=None, weights=None):\n    return 0.0\n"
    )
    fake_distribution("ptyro-lazymiss", source)
    reg = ptyro_core.get_registry()
    assert {"gone", "typo", "fine"} <= set(reg.names("loss"))
    with pytest.raises(ptyro_core.PluginError, match=r"loss 'gone'.*failed to import 'no_such_module_xyz:loss'.*ModuleNotFoundError"):
        reg.check()
    errors = {b.name: b.error for b in reg.broken if b.distribution == "ptyro-lazymiss"}
    assert set(errors) == {"gone", "typo"} and "AttributeError" in errors["typo"]
    assert reg.get("loss", "fine")(None, None) == 0.0


def test_an_invalid_reference_string_is_broken_at_registration(fake_distribution):
    fake_distribution("ptyro-lazyinvalid", _lazy_source("ptyro_register_losses", "not a module"))
    reg = ptyro_core.get_registry()
    assert "hooktest" not in reg.names("loss")
    (bad,) = [b for b in reg.broken if b.distribution == "ptyro-lazyinvalid"]
    assert "is not a 'package.module:attribute' reference" in bad.error


def test_a_lazy_component_that_raises_is_blamed_by_name(fake_distribution):
    import sys

    source = _lazy_source("ptyro_register_losses", "lazy_raising_impl")
    info = fake_distribution("ptyro-lazyraise", source, version="3.1")
    (info.parent / "lazy_raising_impl.py").write_text("def comp(predicted, measured, *, mask=None, weights=None):\n    return 1 / 0\n")
    try:
        reg = ptyro_core.get_registry()
        try:
            reg.get("loss", "hooktest")(1.0, 1.0)
        except ZeroDivisionError as e:
            comp, dist = reg.blame(e)
        assert (comp.kind, comp.name, dist) == ("loss", "hooktest", "ptyro-lazyraise")
    finally:
        sys.modules.pop("lazy_raising_impl", None)

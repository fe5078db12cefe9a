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

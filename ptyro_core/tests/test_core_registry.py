"""The registry, driven through real (fake) installed distributions on sys.path: discovery,
lookup, duplicate and broken plugins, the environment switches, runtime registration, and the
``plugins`` listing."""

import io
import json
import subprocess
import sys
import types

import pytest

from ptyro_core import (
    DuplicateComponentError,
    PluginError,
    Registry,
    UnknownComponentError,
    get_registry,
    hookimpl,
)
from ptyro_core.cli import main as core_main
from ptyro_core.cli import run_plugins

HEALTHY = """
from ptyro_core import hookimpl

def huberish(predicted, measured, *, mask=None, weights=None):
    import jax.numpy as jnp
    return jnp.mean((predicted - measured) ** 2)

def fake_propagator(wave, dz, grid, energy, *, tilt=(0.0, 0.0)):
    return wave

@hookimpl
def ptyro_register_losses(register):
    register("squared", huberish, description="mean squared error")
    register("squares", huberish, description="the same, twice")

@hookimpl
def ptyro_register_propagators(register):
    register("identity", fake_propagator, description="does nothing")
"""

BROKEN_IMPORT = """
import this_module_does_not_exist_anywhere
"""

WRONG_TYPE = """
from ptyro_core import hookimpl

def takes_nothing():
    return 0

@hookimpl
def ptyro_register_losses(register):
    register("not_callable", 42, description="an int is no loss")
    register("bad_signature", takes_nothing, description="cannot take (predicted, measured)")
    register("good_one", lambda predicted, measured, **kw: 0.0, description="fine")
"""

DUPLICATE = """
from ptyro_core import hookimpl

@hookimpl
def ptyro_register_losses(register):
    register("squared", lambda predicted, measured, **kw: 0.0, description="clashes")
"""

RAISING = """
from ptyro_core import hookimpl

@hookimpl
def ptyro_register_optimizers(register):
    raise RuntimeError("boom in the hook")
"""


def _listing(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    import argparse

    ns = argparse.Namespace(json="--json" in argv, kind=None, strict="--strict" in argv)
    code = run_plugins(ns, out=out)
    return code, out.getvalue()


def test_healthy_distribution_is_discovered_with_its_distribution_and_version(fake_distribution) -> None:
    fake_distribution("ptyro-fake-healthy", HEALTHY, version="1.2.3")
    reg = get_registry()
    comp = reg.component("loss", "squared")
    assert (comp.distribution, comp.version, comp.description) == ("ptyro-fake-healthy", "1.2.3", "mean squared error")
    assert reg.get("propagator", "identity")("w", 1.0, None, 1.0) == "w"
    assert "squared" in reg.names("loss")


def test_unknown_name_lists_known_names_and_closest_match(fake_distribution) -> None:
    fake_distribution("ptyro-fake-healthy", HEALTHY)
    with pytest.raises(UnknownComponentError, match=r"unknown loss 'squard'; known losss?: .*squared.*closest match: 'squared'"):
        get_registry().get("loss", "squard")


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(UnknownComponentError, match=r"unknown component kind 'losses'.*did you mean 'loss'"):
        Registry(entry_points=False).get("losses", "x")


def test_import_error_is_reported_and_healthy_plugins_still_work(fake_distribution) -> None:
    fake_distribution("ptyro-fake-healthy", HEALTHY)
    fake_distribution("ptyro-fake-broken", BROKEN_IMPORT)
    reg = get_registry()
    assert reg.get("loss", "squared") is not None
    broken = [b for b in reg.broken if b.distribution == "ptyro-fake-broken"]
    assert len(broken) == 1 and "ModuleNotFoundError" in broken[0].error and "this_module_does_not_exist_anywhere" in broken[0].error
    # the library API names the broken plugin when a lookup fails
    with pytest.raises(UnknownComponentError, match=r"ptyro-fake-broken.*ModuleNotFoundError"):
        reg.get("loss", "from_the_broken_one")
    with pytest.raises(PluginError, match="ptyro-fake-broken"):
        reg.check()


def test_wrong_component_types_are_left_out_with_the_reason(fake_distribution) -> None:
    fake_distribution("ptyro-fake-wrong", WRONG_TYPE)
    reg = get_registry()
    assert reg.names("loss") == ["good_one"] or "good_one" in reg.names("loss")
    errs = {b.name: b.error for b in reg.broken if b.distribution == "ptyro-fake-wrong"}
    assert "must be callable" in errs["not_callable"]
    assert "must accept 2 positional argument" in errs["bad_signature"]
    with pytest.raises(PluginError, match=r"loss 'not_callable' from plugin 'ptyro-fake-wrong'.*must be callable"):
        reg.get("loss", "not_callable")


def test_duplicate_names_are_an_error_naming_both_distributions(fake_distribution) -> None:
    fake_distribution("ptyro-fake-healthy", HEALTHY)
    fake_distribution("ptyro-fake-duplicate", DUPLICATE)
    reg = get_registry()
    with pytest.raises(DuplicateComponentError, match=r"'squared' is registered by several distributions: ptyro-fake-duplicate, ptyro-fake-healthy"):
        reg.get("loss", "squared")
    # the other components of both stay usable
    assert reg.get("loss", "squares") is not None
    assert "squared" not in reg.names("loss")


def test_hook_that_raises_is_reported(fake_distribution) -> None:
    fake_distribution("ptyro-fake-raising", RAISING)
    fake_distribution("ptyro-fake-healthy", HEALTHY)
    reg = get_registry()
    (b,) = [b for b in reg.broken if b.distribution == "ptyro-fake-raising"]
    assert "ptyro_register_optimizers raised RuntimeError: boom in the hook" in b.error
    assert reg.get("loss", "squared") is not None


def test_listing_reports_broken_without_hiding_healthy(fake_distribution) -> None:
    fake_distribution("ptyro-fake-healthy", HEALTHY)
    fake_distribution("ptyro-fake-broken", BROKEN_IMPORT)
    fake_distribution("ptyro-fake-wrong", WRONG_TYPE)
    fake_distribution("ptyro-fake-duplicate", DUPLICATE)
    code, text = _listing(["--json"])
    data = json.loads(text)
    assert code == 0
    names = {(c["kind"], c["name"]) for c in data["components"]}
    assert {("loss", "squares"), ("propagator", "identity"), ("loss", "good_one")} <= names
    assert ("loss", "squared") not in names
    for c in data["components"]:
        assert set(c) == {"kind", "name", "description", "distribution", "version"}
    broken_dists = {b["distribution"] for b in data["broken"]}
    assert {"ptyro-fake-broken", "ptyro-fake-wrong", "ptyro-fake-duplicate", "ptyro-fake-healthy"} <= broken_dists
    code, text = _listing(["--strict"])
    assert code == 1
    assert "broken plugin(s)" in text and "ptyro-fake-broken" in text and "identity" in text


def test_disable_and_load_switches(fake_distribution, monkeypatch) -> None:
    fake_distribution("ptyro-fake-healthy", HEALTHY)
    fake_distribution("ptyro-fake-broken", BROKEN_IMPORT)
    monkeypatch.setenv("PTYRO_DISABLE_PLUGINS", "ptyro-fake-broken")
    reg = Registry()
    assert not [b for b in reg.broken if b.distribution == "ptyro-fake-broken"]
    assert "squared" in reg.names("loss")
    monkeypatch.delenv("PTYRO_DISABLE_PLUGINS")
    monkeypatch.setenv("PTYRO_LOAD_PLUGINS", "ptyro_fake_healthy")  # normalised names match
    reg = Registry()
    assert {c.distribution for c in reg.components()} == {"ptyro-fake-healthy"}
    monkeypatch.setenv("PTYRO_LOAD_PLUGINS", "")
    assert Registry().components() == []


def test_discovery_is_lazy_and_happens_once(fake_distribution) -> None:
    fake_distribution("ptyro-fake-healthy", HEALTHY)
    reg = Registry()
    assert not reg._loaded
    reg.names("loss")
    assert reg._loaded
    n = len(reg.components())
    reg.load()
    assert len(reg.components()) == n


def test_importing_the_core_imports_no_plugin() -> None:
    code = "import sys, ptyro_core; print(any(m.startswith(('ptyro_simul', 'ptyro_invert', 'ptyro_lobato')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_runtime_registration(isolated_registry) -> None:
    class MyPlugin:
        @hookimpl
        def ptyro_register_losses(self, register):
            register("l1", lambda predicted, measured, **kw: abs(predicted - measured), description="L1", aliases=("abs",))

    isolated_registry.register_plugin(MyPlugin(), "my-notebook-plugin")
    assert isolated_registry.get("loss", "l1")(3, 1) == 2
    assert isolated_registry.get("loss", "abs") is isolated_registry.get("loss", "l1")
    assert isolated_registry.component("loss", "l1").distribution == "my-notebook-plugin"
    isolated_registry.unregister_plugin("my-notebook-plugin")
    with pytest.raises(UnknownComponentError):
        isolated_registry.get("loss", "l1")


def test_runtime_registration_of_invalid_component_raises(isolated_registry) -> None:
    mod = types.ModuleType("bad_runtime_plugin")

    @hookimpl
    def ptyro_register_probes(register):
        register("nope", "not a function")

    mod.ptyro_register_probes = ptyro_register_probes
    with pytest.raises(PluginError, match=r"bad_runtime_plugin.*probe 'nope' is not a valid probe"):
        isolated_registry.register_plugin(mod)


def test_invalid_names_are_refused(isolated_registry) -> None:
    class P:
        @hookimpl
        def ptyro_register_losses(self, register):
            register("has space", lambda predicted, measured: 0)

    with pytest.raises(PluginError, match="invalid loss name 'has space'"):
        isolated_registry.register_plugin(P(), "p")


def test_unknown_hook_in_plugin_is_reported(isolated_registry) -> None:
    class Typo:
        @hookimpl
        def ptyro_register_loses(self, register):  # misspelt hook
            pass

    with pytest.raises(PluginError, match="unknown hook 'ptyro_register_loses'; did you mean 'ptyro_register_losses'"):
        isolated_registry.register_plugin(Typo(), "typo")


def test_python_m_ptyro_core_plugins_json_lists_installed_components() -> None:
    out = subprocess.run([sys.executable, "-m", "ptyro_core", "plugins", "--json"], capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    assert set(data) == {"components", "broken"}
    assert ("propagator", "fresnel", "ptyro-simul") in {(c["kind"], c["name"], c["distribution"]) for c in data["components"]}


def test_core_cli_help() -> None:
    with pytest.raises(SystemExit) as e:
        core_main(["plugins", "--help"])
    assert e.value.code == 0

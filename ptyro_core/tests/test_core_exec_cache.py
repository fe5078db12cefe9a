"""The executable cache (``ptyro_core.exec_cache``): a program loaded from it computes what JAX
computes without it (plain calls, ``.lower().compile()``, donations, gradients, closed-over
constants), a program that differs in any way JAX sees (code, constants, shapes, dtypes, static
arguments) never loads another's executable, a corrupt entry falls back to compiling, programs
with callbacks are left to JAX, and a second process loads what the first stored."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptyro_core import exec_cache


@pytest.fixture
def cache(tmp_path):
    """The cache installed in a fresh directory, JAX's in-memory caches empty before and after."""
    jax.clear_caches()
    exec_cache.install(tmp_path)
    try:
        yield tmp_path
    finally:
        exec_cache.uninstall()
        jax.clear_caches()


def _fresh() -> None:
    """Forget every compiled program of this process (the next call asks the cache again)."""
    jax.clear_caches()
    exec_cache._memory.clear()


def _entries(where) -> int:
    return len([p for p in os.listdir(where) if p.endswith(".jexe")])


def test_a_stored_program_loads_and_computes_the_same(cache):
    f = jax.jit(lambda x, y: jnp.sin(x) * y + jnp.fft.fft(x).real)
    x, y = jnp.linspace(0.0, 3.0, 33), jnp.float32(1.5)
    before = exec_cache.stats()
    want = np.asarray(f(x, y))
    assert exec_cache.stats()["stored"] > before["stored"] and _entries(cache) >= 1
    _fresh()
    hits = exec_cache.stats()["hits"]
    got = np.asarray(f(x, y))
    assert exec_cache.stats()["hits"] > hits
    np.testing.assert_array_equal(got, want)


def test_lower_compile_and_the_call_after_it_load_once(cache):
    f = jax.jit(lambda x: jnp.cumsum(x) ** 2)
    x = jnp.arange(10.0)
    want = np.asarray(f(x))
    _fresh()
    s = exec_cache.stats()
    compiled = f.lower(x).compile()
    np.testing.assert_array_equal(np.asarray(compiled(x)), want)
    np.testing.assert_array_equal(np.asarray(f(x)), want)
    after = exec_cache.stats()
    assert after["hits"] - s["hits"] == 2 and after["misses"] == s["misses"]
    assert exec_cache._memory  # the call took the executable the compile had loaded


def _adder(c):
    k = jnp.asarray(c)
    return lambda v: v + k  # k closed over: a constant of the traced program


def test_closed_over_constants_are_part_of_the_key(cache):
    """Two programs that differ only in a closed-over array: a key without the constants'
    bytes would hand the second the first's executable (and its answer)."""
    x = jnp.arange(4.0)
    for c in (np.arange(4.0), np.arange(4.0) * 10.0):
        _fresh()
        got = np.asarray(jax.jit(_adder(c))(x))
        np.testing.assert_array_equal(got, np.asarray(x) + c)


@settings(max_examples=8, deadline=None)
@given(
    n=st.integers(1, 5),
    dtype=st.sampled_from(["float32", "int32", "complex64"]),
    power=st.integers(1, 3),
)
def test_shapes_dtypes_and_static_arguments_never_share_an_executable(tmp_path_factory, n, dtype, power):
    where = tmp_path_factory.mktemp("exe")
    jax.clear_caches()
    exec_cache.install(where)
    try:
        f = jax.jit(lambda x, p: x**p + 1, static_argnums=1)
        x = np.arange(n).astype(dtype)
        for _ in range(2):  # compiled, then loaded
            _fresh()
            got = np.asarray(f(jnp.asarray(x), power))
            assert got.dtype == np.dtype(dtype) and got.shape == (n,)
            np.testing.assert_allclose(got, x**power + 1)
        _fresh()  # the other power, same shape: its own program
        np.testing.assert_allclose(np.asarray(f(jnp.asarray(x), power + 1)), x ** (power + 1) + 1)
    finally:
        exec_cache.uninstall()
        jax.clear_caches()


def test_gradient_through_a_loaded_program(cache):
    def loss(w, x):
        return jnp.sum(jnp.tanh(x @ w) ** 2)

    g = jax.jit(jax.grad(loss))
    w, x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3), jnp.linspace(0.0, 2.0, 20).reshape(5, 4)
    want = np.asarray(g(w, x))
    _fresh()
    h = exec_cache.stats()["hits"]
    got = np.asarray(g(w, x))
    assert exec_cache.stats()["hits"] > h
    np.testing.assert_array_equal(got, want)
    # and the gradient is the gradient (central differences, float32)
    eps, i = 1e-2, (1, 2)
    dw = np.zeros((4, 3), np.float32)
    dw[i] = eps
    fd = (loss(w + dw, x) - loss(w - dw, x)) / (2 * eps)
    assert got[i] == pytest.approx(float(fd), rel=2e-2)


def test_donated_arguments_on_a_loaded_program(cache):
    f = jax.jit(lambda a, b: (a * 2 + b, b), donate_argnums=0)
    want = np.asarray(f(jnp.ones(8), jnp.arange(8.0))[0])
    _fresh()
    a = jnp.ones(8)
    got, _ = f(a, jnp.arange(8.0))
    np.testing.assert_array_equal(np.asarray(got), want)


def test_a_corrupt_entry_is_removed_and_the_program_compiled(cache):
    f = jax.jit(lambda x: x * 3 - 1)
    x = jnp.arange(5.0)
    want = np.asarray(f(x))
    entries = [cache / p for p in os.listdir(cache) if p.endswith(".jexe")]
    for entry in entries:
        entry.write_bytes(b"not an executable")
    _fresh()
    errors, hits = exec_cache.stats()["errors"], exec_cache.stats()["hits"]
    np.testing.assert_array_equal(np.asarray(f(jnp.arange(5.0))), want)  # every program made again
    assert exec_cache.stats()["errors"] > errors and exec_cache.stats()["hits"] == hits
    assert all(e.read_bytes() != b"not an executable" for e in entries if e.exists())  # removed, or compiled and stored again


def test_programs_with_callbacks_are_left_to_jax(cache):
    seen = []

    def host(v):
        seen.append(v)
        return v

    f = jax.jit(lambda x: jax.pure_callback(host, jax.ShapeDtypeStruct((3,), jnp.float32), x) + 1)
    x = jnp.ones(3)
    s, n = exec_cache.stats(), _entries(cache)
    np.testing.assert_array_equal(np.asarray(f(x)), 2.0)
    assert exec_cache.stats()["skipped"] == s["skipped"] + 1 and _entries(cache) == n and seen


def test_uninstall_restores_jax():
    from jax._src import pjit

    original = pjit._resolve_and_lower
    exec_cache.install(os.devnull + "-unused")
    assert pjit._resolve_and_lower is not original and exec_cache.installed()
    exec_cache.uninstall()
    assert pjit._resolve_and_lower is original and exec_cache.installed() is None


_SECOND = """
import sys, jax, jax.numpy as jnp, numpy as np
from ptyro_core import exec_cache
exec_cache.install(sys.argv[1])
f = jax.jit(lambda x: jnp.fft.ifft2(jnp.fft.fft2(x) * 2).real.sum(axis=0))
print(np.asarray(f(jnp.arange(64.0).reshape(8, 8))).tolist(), exec_cache.stats()["hits"], exec_cache.stats()["misses"])
"""


def test_a_second_process_loads_what_the_first_stored(tmp_path):
    runs = [subprocess.run([sys.executable, "-c", _SECOND, str(tmp_path)], capture_output=True, text=True, check=True).stdout.split("] ") for _ in range(2)]
    (v1, c1), (v2, c2) = runs
    assert v1 == v2
    assert c1.split() == ["0", c1.split()[1]] and int(c1.split()[1]) >= 1  # the first compiles
    assert c2.split() == [c1.split()[1], "0"]  # the second loads every program


_AFTER_JAX = """
import sys, jax, jax.numpy as jnp, numpy as np
from ptyro_core import exec_cache
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
if sys.argv[3] == "ours":
    exec_cache.install(sys.argv[2])
x = np.arange(96 * 96, dtype=np.float32).reshape(96, 96)
f = jax.jit(lambda a: (jnp.remainder(a, 7.0)[None] * jnp.ones((3, 1, 1))).sum())
print(float(f(x)), exec_cache.stats()["stored"])
"""


def test_programs_from_jax_cache_are_not_stored_again(tmp_path):
    """A cache of JAX's filled first (ours off): the next process loads from JAX's cache and
    stores nothing of ours (on the CPU such an executable serialises without its kernels and
    would fail to run in the process after, "Function ... not found"); the one after that
    computes the same."""
    jaxdir, ours = tmp_path / "jax", tmp_path / "ours"
    ours.mkdir()
    want = float((np.remainder(np.arange(96 * 96, dtype=np.float32), 7.0) * 3).sum())
    for mode, stored in (("jax", 0), ("ours", 0), ("ours", 0)):
        r = subprocess.run([sys.executable, "-c", _AFTER_JAX, str(jaxdir), str(ours), mode], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-800:]
        value, n = r.stdout.split()
        assert float(value) == want and int(n) == stored


_MODULE = """
import functools
import jax, jax.numpy as jnp

@jax.jit
def f(x, y):
    return BODY

@functools.partial(jax.jit, static_argnums=1)
def g(x, n):
    return x ** n + 1
"""

_UNTRACED = """
import sys
sys.path.insert(0, sys.argv[2])
import jax, numpy as np
from ptyro_core import exec_cache
exec_cache.install(sys.argv[1])
import ptyro_tmp_untraced as m
x = np.linspace(0.0, 2.0, 7, dtype=np.float32)
out = [np.asarray(m.f(x, np.float32(3.0))).tolist(), np.asarray(m.g(x, 2)).tolist(), np.asarray(m.g(x, 3)).tolist()]
out.append(np.asarray(m.g.lower(x, 2).compile()(x)).tolist())  # AOT as the reconstruction does it
out.append(str(m.g.lower(x, 3).out_info))  # and what a lowering tells
print(repr(out), exec_cache.stats()["untraced"])
"""


def test_top_level_functions_are_found_without_tracing(tmp_path):
    """A top-level jitted function of a ``ptyro_*`` module: the second process runs it from
    the cache without tracing it (the same numbers), a static argument is part of the key, and
    an edit of the module's source is never answered with the old program."""
    ex, src = tmp_path / "exe", tmp_path / "src"
    ex.mkdir()
    src.mkdir()
    mod = src / "ptyro_tmp_untraced.py"

    def run(body: str) -> tuple[list, int]:
        text = _MODULE.replace("BODY", body)
        if not mod.exists() or mod.read_text() != text:
            mod.write_text(text)
        r = subprocess.run(
            [sys.executable, "-c", _UNTRACED, str(ex), str(src)], capture_output=True, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        )
        assert r.returncode == 0, r.stderr[-800:]
        values, n = r.stdout.rsplit(" ", 1)
        return eval(values), int(n)  # noqa: S307 - our own printed lists

    x = np.linspace(0.0, 2.0, 7, dtype=np.float32)
    first, n1 = run("jnp.sin(x) * y")
    second, n2 = run("jnp.sin(x) * y")
    assert n1 == 0 and n2 == 3 and second == first
    assert first[3] == first[1] and "shape=(7,), dtype=float32" in first[4]
    np.testing.assert_allclose(first[0], np.sin(x) * 3, rtol=1e-6)
    np.testing.assert_allclose(first[1], x**2 + 1, rtol=1e-6)
    np.testing.assert_allclose(first[2], x**3 + 1, rtol=1e-6)
    edited, n3 = run("jnp.cos(x) * y * 2")  # the source changed: traced again, the new program
    np.testing.assert_allclose(edited[0], np.cos(x) * 6, rtol=1e-6)
    assert n3 == 0


def test_static_arguments_are_keyed_by_all_they_hold():
    """A static argument keys an untraced look-up only by a text that says all it holds: two
    records differing in one nested field differ; an object whose repr is a summary has none
    (such a call is traced as usual)."""
    import dataclasses

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        a: int
        b: tuple = ()

    class Summary:
        def __init__(self, secret):
            self.secret = secret

        def __repr__(self):
            return "Summary()"

    assert exec_cache._canon(Cfg(1, (2.0,))) != exec_cache._canon(Cfg(1, (2.5,)))
    assert exec_cache._canon(Cfg(1, (2.0,))) == exec_cache._canon(Cfg(1, (2.0,)))
    assert exec_cache._canon(Summary(1)) is None and exec_cache._canon((1, Summary(2))) is None
    assert exec_cache._canon(Cfg(1, (Summary(3),))) is None
    assert exec_cache._canon({"x": [1, 2]}) == exec_cache._canon({"x": [1, 2]}) != exec_cache._canon({"x": [1, 3]})
    assert exec_cache._canon(1) != exec_cache._canon(1.0) != exec_cache._canon(True)


def test_a_sharded_program_loads_onto_its_devices(cache):
    """A program sharded over the suite's two devices (and one placed on the second device
    alone) loads onto the devices it was compiled for and computes the same."""
    from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

    devices = jax.devices()
    if len(devices) < 2:
        pytest.skip("needs two devices")
    s = NamedSharding(jax.make_mesh((2,), ("x",), devices=devices[:2]), PartitionSpec("x"))
    x = jax.device_put(jnp.arange(8.0), s)
    on_second = jax.device_put(jnp.arange(4.0), SingleDeviceSharding(devices[1]))
    f = jax.jit(lambda a: jnp.sin(a) * 2, out_shardings=s)
    g = jax.jit(lambda a: a * 3 + 1)
    want, want_g = np.asarray(f(x)), np.asarray(g(on_second))
    _fresh()
    hits = exec_cache.stats()["hits"]
    got, got_g = f(x), g(on_second)
    assert exec_cache.stats()["hits"] >= hits + 2
    np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_array_equal(np.asarray(got_g), want_g)
    assert got.sharding == s and got_g.devices() == {devices[1]}


def test_an_executable_without_its_object_code_is_not_stored(cache):
    """On the CPU an executable that was itself loaded serialises without its kernels (it would
    load in the next process and fail to run there): such an executable is never stored."""
    f = jax.jit(lambda a: jnp.remainder(a, 7.0) * 3)
    x = jnp.arange(64.0)
    f(x)
    _fresh()
    f(x)  # loaded from the cache
    (key, loaded), *_ = [(k, e) for k, e in exec_cache._memory.items() if e.out_avals[0].shape == (64,)]
    if jax.default_backend() != "cpu":
        pytest.skip("the object-code check is for the CPU")
    assert not exec_cache._store(str(cache), "reloaded", loaded, [])
    assert not (cache / "reloaded.jexe").exists()


def test_the_untraced_look_up_can_be_switched_off(tmp_path, monkeypatch):
    from jax._src import pjit

    original = pjit._cpp_pjit
    monkeypatch.setenv("PTYRO_EXEC_CACHE_TRACE", "1")
    exec_cache.install(tmp_path)
    try:
        assert pjit._cpp_pjit is original and pjit._resolve_and_lower is not None
    finally:
        exec_cache.uninstall()
    monkeypatch.delenv("PTYRO_EXEC_CACHE_TRACE")
    exec_cache.install(tmp_path)
    try:
        assert pjit._cpp_pjit is not original
    finally:
        exec_cache.uninstall()
    assert pjit._cpp_pjit is original


def test_programs_compiled_on_several_threads(cache):
    """Four threads compiling and then loading their own programs at once: every result right."""
    from concurrent.futures import ThreadPoolExecutor

    def work(k):
        f = jax.jit(lambda a: jnp.cumsum(a) * k)
        return np.asarray(f(jnp.arange(10.0 + k)))

    for _ in range(2):  # compiled, then loaded
        _fresh()
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(work, range(1, 9)))
        for k, g in zip(range(1, 9), got):
            np.testing.assert_allclose(g, np.cumsum(np.arange(10.0 + k)) * k)


def _square(x):
    return x * x


def test_a_plugin_registered_at_run_time_turns_the_untraced_look_up_off(monkeypatch):
    """A notebook's plugin is in no fingerprint, and our functions look components up by name
    while traced: with one registered, no call is keyed without tracing (JAX's own path, and the
    key after tracing, which holds the traced program, still serve it); unregistered, keys again."""
    from ptyro_core import hookimpl, registry

    class Notebook:
        @hookimpl
        def ptyro_register_losses(self, register):
            register("exec-cache-l1", lambda predicted, measured, **kw: abs(predicted - measured), description="L1")

    monkeypatch.setattr(registry.get_registry(), "_runtime", set())  # whatever other tests left
    f = jax.jit(_square)
    x = jnp.ones(3)
    assert exec_cache._untraced_key(f._fun, f._jit_info, (x,), {}) is not None
    registry.register_plugin(Notebook(), "exec-cache-notebook")
    try:
        assert exec_cache._runtime_plugins()
        assert exec_cache._untraced_key(f._fun, f._jit_info, (x,), {}) is None
    finally:
        registry.get_registry().unregister_plugin("exec-cache-notebook")
    assert not exec_cache._runtime_plugins()
    assert exec_cache._untraced_key(f._fun, f._jit_info, (x,), {}) is not None

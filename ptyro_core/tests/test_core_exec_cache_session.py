"""The executable cache's sessions (``install(..., session=NAME)``): the programs a process used
are listed in their order of use, the next process of that name loads them on a thread of its
own, and each program still takes an executable only under its own key: a preloaded one that
fails or was never listed is loaded (or compiled) as without a session."""

import os
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ptyro_core import exec_cache


def _f(a):
    return jnp.sin(a) * 2.0


def _g(a):
    return jnp.cumsum(a) - 1.0


X = np.linspace(0.0, 3.0, 12, dtype=np.float32)


def _restart(where, threads, session="s") -> None:
    """A new process's start, in this one: JAX's and our in-memory programs forgotten, the cache
    installed again; waits until the session's programs are loaded ahead. ``threads`` (those
    that looked an executable up) starts again empty."""
    threads.clear()
    exec_cache.uninstall()
    jax.clear_caches()
    exec_cache.install(where, session=session)
    for t in threading.enumerate():
        if t.name == "ptyro-exec-cache":
            t.join()


@pytest.fixture
def spied(tmp_path, monkeypatch):
    """(the cache directory, the names of the threads that looked an executable up on disk)."""
    threads: list[str] = []
    real = exec_cache._deserialize

    def deserialize(where, key):
        threads.append(threading.current_thread().name)
        return real(where, key)

    monkeypatch.setattr(exec_cache, "_deserialize", deserialize)
    jax.clear_caches()
    exec_cache.install(tmp_path, session="s")
    try:
        yield tmp_path, threads
    finally:
        exec_cache.uninstall()
        jax.clear_caches()


def test_the_next_process_loads_the_session_programs_ahead(spied):
    where, threads = spied
    want = (np.sin(X) * 2.0, np.cumsum(X) - 1.0)
    first = (jax.jit(_f)(X), jax.jit(_g)(X))
    listed = (where / ".session-s").read_text().split()
    assert len(listed) == 2 and all(os.path.exists(where / f"{k}.jexe") for k in listed)
    _restart(where, threads)
    assert threads == ["ptyro-exec-cache"] * 2  # both read ahead, before anything asked for them
    again = (jax.jit(_f)(X), jax.jit(_g)(X))
    assert threads == ["ptyro-exec-cache"] * 2 and exec_cache._session["preload"] == {}  # both taken, none read again
    for a, b, w in zip(first, again, want):
        np.testing.assert_allclose(np.asarray(a), w, rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert (where / ".session-s").read_text().split() == listed  # the same programs, in the same order


def test_a_preloaded_program_is_taken_only_under_its_own_key(spied):
    where, threads = spied
    jax.jit(_f)(X)
    _restart(where, threads)
    before = exec_cache.stats()
    y = np.arange(5, dtype=np.float32)  # another shape: another key, never the preloaded one
    np.testing.assert_allclose(np.asarray(jax.jit(_f)(y)), np.sin(y) * 2.0, rtol=1e-6)
    assert len(exec_cache._session["preload"]) == 1  # still there, unused
    assert exec_cache.stats()["misses"] - before["misses"] == 1 and exec_cache.stats()["hits"] == before["hits"]


def test_a_corrupt_listed_entry_is_compiled_again(spied):
    where, threads = spied
    jax.jit(_f)(X)
    (key,) = (where / ".session-s").read_text().split()
    (where / f"{key}.jexe").write_bytes(b"not an executable")
    _restart(where, threads)
    before = exec_cache.stats()
    np.testing.assert_allclose(np.asarray(jax.jit(_f)(X)), np.sin(X) * 2.0, rtol=1e-6)
    after = exec_cache.stats()
    assert (after["errors"] - before["errors"], after["misses"] - before["misses"]) == (1, 1)  # removed, compiled, stored again
    assert (where / f"{key}.jexe").read_bytes() != b"not an executable"


def test_the_list_holds_only_keys_of_existing_entries(tmp_path):
    real = "a" * 64
    (tmp_path / f"{real}.jexe").write_bytes(b"")
    (tmp_path / ".session-s").write_text(f"../../elsewhere\n{'b' * 64}\n{real}\n{real}\nA{'a' * 63}\n")
    assert exec_cache._recorded(str(tmp_path), "s") == [real]
    assert exec_cache._recorded(str(tmp_path), "none") == []


@pytest.mark.parametrize("name", ["", "../x", "a b", "demo/1"])
def test_a_session_name_is_a_plain_name(tmp_path, name):
    with pytest.raises(ValueError, match="session: expected a name .*" + repr(name).replace("[", r"\[").replace(".", r"\.")):
        exec_cache.install(tmp_path, session=name)
    assert exec_cache.installed() is None


def test_uninstall_drops_what_was_loaded_ahead(spied):
    where, threads = spied
    jax.jit(_f)(X)
    _restart(where, threads)
    assert len(exec_cache._session["preload"]) == 1
    exec_cache.uninstall()
    assert exec_cache._session == {"name": None, "used": [], "preload": {}, "stop": None}


_RUN = """
import sys, jax, jax.numpy as jnp, numpy as np
from ptyro_core import exec_cache
exec_cache.install(sys.argv[1], session="p")
x = np.linspace(0.0, 3.0, 12, dtype=np.float32)
y = jax.jit(lambda a: jnp.sin(a) * 2.0)(x)
print(repr(np.asarray(y).tolist()), exec_cache.stats()["hits"], exec_cache.stats()["misses"])
"""


def test_a_second_process_computes_the_same_from_the_session(tmp_path):
    out = [subprocess.run([sys.executable, "-c", _RUN, str(tmp_path)], capture_output=True, text=True, check=True).stdout.split("] ") for _ in range(2)]
    (v1, c1), (v2, c2) = out
    assert v1 == v2
    assert c1.split() == ["0", "1"] and c2.split() == ["1", "0"]

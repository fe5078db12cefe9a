#!/usr/bin/env bash
# Prove that a plugin installs on its own into a clean environment and passes its tests there.
#
#   plugins/check_isolated.sh ptyro-robust-losses [ptyro-lobato ptyro-prism ...]
#
# For each plugin: a fresh virtual environment in a temporary folder; ptyro-core (plus
# ptyro-simul for plugins that extend it) and the plugin installed from their local paths as
# regular (non-editable) wheels, so package data and entry points are tested as shipped; pytest
# and hypothesis; then the plugin's tests, copied next to the repository's root conftest.py, run
# against the installed packages (never the source tree). Uses `uv venv` / `uv pip` when uv is
# available (fast, cached), else python -m venv and pip. Exit status 0 only if every plugin passes.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-python3}"
[ $# -ge 1 ] || { echo "usage: $0 PLUGIN [PLUGIN ...]  (folders under plugins/)" >&2; exit 2; }

status=0
for plugin in "$@"; do
    src="$here/$plugin"
    [ -f "$src/pyproject.toml" ] || { echo "check_isolated: no plugin at $src" >&2; exit 2; }
    tmp="$(mktemp -d "${TMPDIR:-/tmp}/ptyro-isolated-$plugin.XXXXXX")"
    deps=("$root/ptyro_core")
    # the distributions a plugin extends, read from its own dependencies
    if grep -q '"ptyro-simul"' "$src/pyproject.toml"; then deps+=("$root/ptyro_simul"); fi
    if grep -q '"ptyro-invert"' "$src/pyproject.toml"; then deps+=("$root/ptyro_invert"); fi
    echo "== $plugin: fresh environment in $tmp; installing ${deps[*]##*/} + $plugin"
    if command -v uv >/dev/null 2>&1; then
        uv venv -q --python "$python" "$tmp/venv"
        install=(uv pip install -q --python "$tmp/venv/bin/python")
    else
        "$python" -m venv "$tmp/venv"
        install=("$tmp/venv/bin/python" -m pip install -q)
    fi
    "${install[@]}" "${deps[@]}" "$src" pytest hypothesis
    mkdir -p "$tmp/run"
    cp -r "$src/tests" "$tmp/run/tests"
    cp "$root/conftest.py" "$tmp/run/conftest.py"
    echo "== $plugin: installed distributions"
    "$tmp/venv/bin/python" -c "import importlib.metadata as md; print(sorted(d.metadata['Name'] + ' ' + d.version for d in md.distributions() if d.metadata['Name'].startswith('ptyro')))"
    if (cd "$tmp/run" && "$tmp/venv/bin/python" -m pytest -q -p ptyro_core.testing --import-mode=importlib -p no:cacheprovider tests); then
        echo "== $plugin: PASSED in an isolated environment"
    else
        echo "== $plugin: FAILED in an isolated environment" >&2
        status=1
    fi
    [ -n "${KEEP_ISOLATED:-}" ] || rm -rf "$tmp"
done
exit $status

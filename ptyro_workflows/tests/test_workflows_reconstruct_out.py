"""``reconstruct(..., out=)`` writes its own file and provenance, as ``simulate`` does: the output
checked before anything is computed, written atomically, nothing left behind on failure; the
CLI goes through the same code path."""

import numpy as np
import pytest

import ptyro_core as pc
from ptyro_workflows import load_reconstruction, read_file_provenance, reconstruct, save_dataset

CONFIG = {"probe": {"semiangle_cutoff": 25.0, "C10": 60.0}, "reconstruction": {"iterations": 2, "batch_size": 9}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from ptyro_invert.synthetic import hexagonal_phase, setup, simulate, with_object

    grid, scan, start = setup(gpts=24, sampling=0.25, scan=(3, 3), step=0.75, aberrations={"C10": 60.0}, padding_px=4)
    truth = with_object(start, np.exp(0.5j * hexagonal_phase(start.object.shape[-2:], start.sampling)))
    ds = simulate(truth, grid, scan)
    path = tmp_path_factory.mktemp("data") / "data.h5"
    save_dataset(path, ds)
    return ds, path


def test_out_writes_the_result_and_its_provenance(data, tmp_path):
    ds, path = data
    out = tmp_path / "rec.h5"
    state = reconstruct(ds, CONFIG, out, progress=False, command=["python", "test"], record={"input": str(path)})
    written = load_reconstruction(out)
    np.testing.assert_array_equal(np.asarray(written.object), np.asarray(state.object))
    np.testing.assert_array_equal(np.asarray(written.loss), np.asarray(state.loss))
    prov = read_file_provenance(out)
    assert prov["kind"] == "reconstruction" and prov["command"] == "python test" and prov["input"] == str(path)
    assert [c["name"] for c in prov["components"]][:1] == ["single_slice"] and "iterations = 2" in prov["config"]
    assert f"energy = {float(ds.energy)}" in prov["config"]  # the energy used: the dataset's
    assert "jax_compilation_cache" in prov
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.h5"]  # no temporary left


def test_out_is_checked_before_anything_runs(data, tmp_path):
    ds, path = data
    calls = []
    config = {**CONFIG, "reconstruction": {**CONFIG["reconstruction"], "options": {"callback": calls.append}}}
    (tmp_path / "exists.h5").write_bytes(b"keep")
    with pytest.raises(pc.PtyroValueError, match="exists; pass --overwrite"):
        reconstruct(ds, config, tmp_path / "exists.h5", progress=False)
    assert (tmp_path / "exists.h5").read_bytes() == b"keep"
    with pytest.raises(pc.PtyroValueError, match="is the same file as the input"):
        reconstruct(ds, config, path, progress=False, inputs=[path], overwrite=True)
    with pytest.raises(pc.PtyroValueError, match="does not exist"):
        reconstruct(ds, config, tmp_path / "no" / "rec.h5", progress=False)
    assert calls == []  # no pass ran


def test_a_failed_run_leaves_nothing(data, tmp_path):
    ds, _ = data

    def fail(state):
        raise RuntimeError("stopped by the test")

    config = {**CONFIG, "reconstruction": {**CONFIG["reconstruction"], "options": {"callback": fail}}}
    with pytest.raises(RuntimeError, match="stopped by the test"):
        reconstruct(ds, config, tmp_path / "rec.h5", progress=False)
    assert list(tmp_path.iterdir()) == []

"""What a second run in the same process (or a warm start) need not do again: the check before a
reconstruction traces its centre-of-mass program once per process (a top-level function, which
the executable cache can also load untraced), and the library versions of a provenance record
are read from the installed metadata once per process."""

import numpy as np
import pytest

from ptyro_invert import calibrate as cal
from ptyro_invert.synthetic import hexagonal_phase, setup, simulate, with_object
from ptyro_workflows import preprocess, provenance


@pytest.fixture(scope="module")
def dataset():
    grid, scan, st0 = setup(gpts=32, sampling=0.2, scan=(4, 4), step=0.6, aberrations={"C10": 40.0}, padding_px=8)
    truth = with_object(st0, np.exp(1j * hexagonal_phase(st0.object.shape[-2:], st0.sampling))[None])
    return simulate(truth, grid, scan, dose=2e4)


def test_the_check_traces_its_centre_of_mass_program_once(dataset, monkeypatch):
    traced = []
    real = preprocess._repaired_com

    def counting(patterns, bad):
        traced.append(patterns.shape)
        return real(patterns, bad)

    preprocess._jitted_com.cache_clear()
    monkeypatch.setattr(preprocess, "_repaired_com", counting)
    try:
        first = preprocess.analyse(dataset, None, apply_corrections=False)[0].arrays["com"]
        again = preprocess.analyse(dataset, None, apply_corrections=False)[0].arrays["com"]
    finally:
        preprocess._jitted_com.cache_clear()  # the counting function is not kept for later tests
    assert len(traced) == 1  # a jitted lambda made per call was traced by every check
    np.testing.assert_array_equal(first, again)
    patterns = np.asarray(dataset.array, np.float32)
    np.testing.assert_allclose(first, np.asarray(cal.center_of_mass(patterns)), atol=1e-4)  # no bad pixels: the plain centres of mass


def test_library_versions_read_the_metadata_once(monkeypatch):
    read = []
    real = provenance.md.version
    monkeypatch.setattr(provenance.md, "version", lambda d: read.append(d) or real(d))
    provenance._distribution_versions.cache_clear()
    first = provenance.library_versions()
    second = provenance.library_versions()
    assert first == second and first["numpy"] == np.__version__ and "jax_backend" in first
    assert sorted(read) == sorted(provenance._DISTRIBUTIONS)  # each once, for both records

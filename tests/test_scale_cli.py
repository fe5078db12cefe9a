"""The multi-host flags of `ptyro simulate` / `ptyro reconstruct` refuse incomplete or impossible
settings with a one-line error (exit status 2) before anything is computed or written."""

import pytest

from ptyro_workflows.cli import main


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--coordinator", "127.0.0.1:1234"], "--coordinator, --num-processes and --process-id go together"),
        (["--coordinator", "127.0.0.1:1234", "--num-processes", "2", "--process-id", "2"], "expected 0 <= I < --num-processes 2"),
        (["--distributed"], "--distributed: no cluster environment found"),
    ],
)
def test_bad_multi_host_flags(flags, message, tmp_path, capsys, monkeypatch) -> None:
    for var in ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "sim.h5"
    assert main(["simulate", "-o", str(out), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("ptyro: error:")
    assert not out.exists()

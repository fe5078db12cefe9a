"""CIF and POSCAR files through ASE (the `ase` extra, installed for the test suite) give the same
crystal as the built-in one."""

import numpy as np

from ptyro_simul.structures import build_crystal, read_structure

SRTIO3_CIF = """data_SrTiO3
_cell_length_a 3.905
_cell_length_b 3.905
_cell_length_c 3.905
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P m -3 m'
_symmetry_Int_Tables_number 221
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Sr1 Sr 0.0 0.0 0.0
Ti1 Ti 0.5 0.5 0.5
O1 O 0.5 0.5 0.0
"""


def _sorted(atoms):
    pos = np.asarray(atoms.positions) % np.asarray(atoms.cell)
    key = np.lexsort((pos[:, 2].round(3), pos[:, 1].round(3), pos[:, 0].round(3), np.asarray(atoms.numbers)))
    return np.asarray(atoms.numbers)[key], pos[key]


def test_cif_matches_builtin_srtio3(tmp_path) -> None:
    path = tmp_path / "SrTiO3.cif"
    path.write_text(SRTIO3_CIF)
    atoms = read_structure(path)
    ref = build_crystal("SrTiO3")
    assert atoms.cell == (3.905, 3.905, 3.905)
    assert sorted(np.asarray(atoms.numbers).tolist()) == [8, 8, 8, 22, 38]
    (za, pa), (zb, pb) = _sorted(atoms), _sorted(ref)
    np.testing.assert_array_equal(za, zb)
    np.testing.assert_allclose(pa, pb, atol=1e-4)


def test_poscar_reads_silicon(tmp_path) -> None:
    path = tmp_path / "POSCAR"
    path.write_text(
        "Si8\n1.0\n5.431 0 0\n0 5.431 0\n0 0 5.431\nSi\n8\nDirect\n"
        "0 0 0\n0 0.5 0.5\n0.5 0 0.5\n0.5 0.5 0\n0.25 0.25 0.25\n0.25 0.75 0.75\n0.75 0.25 0.75\n0.75 0.75 0.25\n"
    )
    atoms = read_structure(path)
    assert len(atoms) == 8 and set(np.asarray(atoms.numbers).tolist()) == {14}
    (za, pa), (zb, pb) = _sorted(atoms), _sorted(build_crystal("Si"))
    np.testing.assert_allclose(pa, pb, atol=1e-4)

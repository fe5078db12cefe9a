"""Built-in crystals, zone axes, supercells, XYZ / extended XYZ readers, the ASE path."""

import numpy as np
import pytest

from ptyro_core import PtyroValueError
from ptyro_simul.structures import BUILTIN_CRYSTALS, atoms_from_ase, build_crystal, read_structure


@pytest.mark.parametrize(
    ("name", "axis", "natoms", "cell"),
    [
        ("SrTiO3", (0, 0, 1), 5, (3.905, 3.905, 3.905)),
        ("SrTiO3", (1, 1, 0), 10, (3.905 * 2**0.5, 3.905, 3.905 * 2**0.5)),
        ("Si", (0, 0, 1), 8, (5.431,) * 3),
        ("Si", (1, 1, 1), 48, (5.431 * 2**0.5, 5.431 * 6**0.5, 5.431 * 3**0.5)),
        ("Au", (1, 1, 0), 8, (4.078 * 2**0.5, 4.078, 4.078 * 2**0.5)),
        ("GaAs", (0, 0, 1), 8, (5.653,) * 3),
        ("MoS2", (0, 0, 1), 6, (3.16, 3.16 * 3**0.5, 6.5)),
        ("graphene", (0, 0, 1), 4, (2.46, 2.46 * 3**0.5, 3.35)),
    ],
)
def test_builtin_cells(name, axis, natoms, cell):
    atoms = build_crystal(name, zone_axis=axis)
    assert len(atoms) == natoms
    np.testing.assert_allclose(atoms.cell, cell, rtol=1e-6)
    pos = np.asarray(atoms.positions)
    assert np.all(pos >= -1e-5) and np.all(pos < np.asarray(atoms.cell) + 1e-5)


def test_nearest_neighbour_distances():
    # Si: 2.352 Å (a√3/4); Au: 2.884 Å (a/√2); graphene 1.420 Å (a/√3); independent of orientation
    for name, axis, d in [("Si", (1, 1, 0), 5.431 * 3**0.5 / 4), ("Au", (1, 1, 1), 4.078 / 2**0.5), ("graphene", (0, 0, 1), 2.46 / 3**0.5)]:
        atoms = build_crystal(name, repeat=(2, 2, 2) if name != "graphene" else (2, 2, 1), zone_axis=axis)
        pos = np.asarray(atoms.positions, np.float64)
        cell = np.asarray(atoms.cell)
        diff = pos[:, None] - pos[None]
        diff -= cell * np.round(diff / cell)
        dist = np.linalg.norm(diff, axis=-1) + np.eye(len(pos)) * 99
        assert dist.min() == pytest.approx(d, rel=1e-4), name


def test_repeat_and_composition():
    atoms = build_crystal("SrTiO3", repeat=(2, 3, 4))
    assert len(atoms) == 5 * 24
    z = np.asarray(atoms.numbers)
    assert (z == 38).sum() == 24 and (z == 22).sum() == 24 and (z == 8).sum() == 72
    assert atoms.cell == pytest.approx((2 * 3.905, 3 * 3.905, 4 * 3.905))
    gaas = build_crystal("gaas", sigmas={"Ga": 0.08, "As": 0.07})
    assert sorted(set(np.round(np.asarray(gaas.sigmas, np.float64), 3).tolist())) == [0.07, 0.08]


def test_srtio3_columns_along_001():
    atoms = build_crystal("SrTiO3")
    xy = {tuple(np.round(np.asarray(p[:2]) / 3.905, 3)): int(z) for p, z in zip(atoms.positions, atoms.numbers) if z != 8}
    assert xy == {(0.0, 0.0): 38, (0.5, 0.5): 22}


def test_builtin_errors():
    with pytest.raises(PtyroValueError, match="unknown name 'NaCl'.*SrTiO3"):
        build_crystal("NaCl")
    with pytest.raises(PtyroValueError, match="zone_axis.*MoS2"):
        build_crystal("MoS2", zone_axis=(1, 1, 0))
    with pytest.raises(PtyroValueError, match="repeat"):
        build_crystal("Si", repeat=(0, 1, 1))
    assert set(BUILTIN_CRYSTALS) >= {"SrTiO3", "Si", "Au", "GaAs", "MoS2", "graphene"}


def test_read_xyz_and_extended_xyz(tmp_path):
    plain = tmp_path / "water.xyz"
    plain.write_text("3\nwater\nO 0.0 0.0 0.0\nH 0.757 0.586 0.0\nH -0.757 0.586 0.0\n")
    atoms = read_structure(plain, vacuum=3.0)
    assert list(np.asarray(atoms.numbers)) == [8, 1, 1]
    assert atoms.cell == pytest.approx((2 * 0.757 + 6, 0.586 + 6, 6.0))
    assert np.asarray(atoms.positions).min() == pytest.approx(3.0)
    ext = tmp_path / "cell.extxyz"
    ext.write_text(
        '2\nLattice="4.0 0.0 0.0 0.0 5.0 0.0 0.0 0.0 6.0" Properties=species:S:1:pos:R:3 pbc="T T T"\n'
        "Sr 0.0 0.0 0.0\nti 2.0 2.5 3.0\n"
    )
    atoms = read_structure(ext)
    assert atoms.cell == (4.0, 5.0, 6.0)
    assert list(np.asarray(atoms.numbers)) == [38, 22]
    np.testing.assert_allclose(np.asarray(atoms.positions[1]), [2.0, 2.5, 3.0])


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("x\ncomment\n", r"bad\.xyz, line 1: expected the number of atoms"),
        ("2\ncomment\nC 0 0 0\n", r"bad\.xyz, line 4: expected 2 atom lines"),
        ("1\ncomment\nC 0 zero 0\n", r"bad\.xyz, line 3: expected three coordinates"),
        ("1\ncomment\nXx 0 0 0\n", r"bad\.xyz, line 3: unknown element symbol 'Xx'"),
        ('1\nLattice="4 0 0 0 4 0 1 0 4"\nC 0 0 0\n', r"bad\.xyz, line 2: expected an orthorhombic Lattice"),
        ("1\ncomment\nC 0 0\n", r"bad\.xyz, line 3: expected 'symbol x y z'"),
    ],
)
def test_malformed_files_are_refused(tmp_path, text, match):
    path = tmp_path / "bad.xyz"
    path.write_text(text)
    with pytest.raises(PtyroValueError, match=match):
        read_structure(path)


class _FakeAseAtoms:
    """Duck-typed stand-in for ase.Atoms (the conversion path, tested without ASE)."""

    def __init__(self, cell, positions, numbers):
        self.cell = np.asarray(cell)
        self._p, self._n = np.asarray(positions), np.asarray(numbers)

    def get_positions(self):
        return self._p

    def get_atomic_numbers(self):
        return self._n


def test_atoms_from_ase_conversion():
    atoms = atoms_from_ase(_FakeAseAtoms(np.diag([3.0, 4.0, 5.0]), [[0.5, 4.5, 1.0]], [79]))
    assert atoms.cell == (3.0, 4.0, 5.0)
    np.testing.assert_allclose(np.asarray(atoms.positions), [[0.5, 0.5, 1.0]])  # wrapped into the cell
    with pytest.raises(PtyroValueError, match="orthorhombic"):
        atoms_from_ase(_FakeAseAtoms([[3, 0, 0], [1, 4, 0], [0, 0, 5]], [[0, 0, 0]], [6]))


def test_non_xyz_without_ase_names_the_extra(tmp_path):
    path = tmp_path / "POSCAR"
    path.write_text("Si\n1.0\n5.431 0 0\n0 5.431 0\n0 0 5.431\nSi\n1\nDirect\n0 0 0\n")
    try:
        import ase  # noqa: F401
    except ImportError:
        with pytest.raises(PtyroValueError, match=r"ptyro-simul\[ase\]"):
            read_structure(path)
    else:
        atoms = read_structure(path)
        assert len(atoms) == 1 and atoms.cell == pytest.approx((5.431,) * 3)

"""Built-in crystals, zone axes, supercells, XYZ / extended XYZ readers, the ASE path."""

import re

import numpy as np
import pytest

from ptyro_core import PtyroValueError
from ptyro_simul.elements import atomic_number
from ptyro_simul.structures import BUILTIN_CRYSTALS, StructureNote, atoms_from_ase, build_crystal, orient_lattice, read_structure


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
        ('1\nLattice="4 0 0 4 0 0 0 0 4"\nC 0 0 0\n', r"bad\.xyz, line 2: expected a Lattice of three independent vectors"),
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
    np.testing.assert_allclose(np.asarray(atoms.positions), [[0.5, 0.5, 1.0]], atol=1e-6)  # wrapped into the cell
    # a monoclinic cell becomes the orthorhombic supercell a x (3b - a), with a note
    with pytest.warns(StructureNote, match="orthorhombic supercell"):
        atoms = atoms_from_ase(_FakeAseAtoms([[3, 0, 0], [1, 4, 0], [0, 0, 5]], [[0, 0, 0]], [6]))
    assert np.allclose(atoms.cell, (3.0, 12.0, 5.0)) and len(atoms.numbers) == 3


def _hexagonal(crystal):
    """An ase.Atoms-like object of a built-in hexagonal crystal in its primitive (120°) cell."""
    c = BUILTIN_CRYSTALS[crystal]
    lat = np.asarray(c.lattice)
    return _FakeAseAtoms(lat, np.asarray(c.fractional) @ lat, [atomic_number(s) for s in c.symbols])


def _sorted(atoms):
    pos = np.asarray(atoms.positions, np.float64)
    order = np.lexsort(np.round(pos, 4).T[::-1])
    return pos[order], np.asarray(atoms.numbers)[order]


@pytest.mark.parametrize("crystal", ["graphene", "MoS2"])
def test_a_hexagonal_cell_is_made_orthogonal_like_the_built_in_crystal(crystal):
    """Independent reference: the built-in crystals' hand-written a x a√3 cells."""
    with pytest.warns(StructureNote, match="120"):
        atoms = atoms_from_ase(_hexagonal(crystal))
    ref = build_crystal(crystal)
    np.testing.assert_allclose(atoms.cell, ref.cell, rtol=1e-6)
    assert atoms.cell[1] == pytest.approx(atoms.cell[0] * np.sqrt(3), rel=1e-6)
    (p, n), (rp, rn) = _sorted(atoms), _sorted(ref)
    np.testing.assert_array_equal(n, rn)
    np.testing.assert_allclose(p, rp, atol=1e-4)


@pytest.mark.parametrize("zone", [(1, 1, 0), (1, 1, 1)])
def test_a_zone_axis_for_any_structure_matches_the_built_in_orientation(zone):
    """A cubic structure given as a file/ase.Atoms along [110] or [111]: the same cell volume,
    atoms and atomic column spacing along the beam as the built-in crystal."""
    c = BUILTIN_CRYSTALS["SrTiO3"]
    lat = np.asarray(c.lattice)
    fake = _FakeAseAtoms(lat, np.asarray(c.fractional) @ lat, [atomic_number(s) for s in c.symbols])
    with pytest.warns(StructureNote, match=re.escape(f"zone axis {list(zone)}")):
        atoms = atoms_from_ase(fake, zone)
    ref = build_crystal("SrTiO3", zone_axis=zone)
    assert sorted(atoms.cell) == pytest.approx(sorted(ref.cell), rel=1e-6)
    assert atoms.cell[2] == pytest.approx(ref.cell[2], rel=1e-6)  # the repeat along the beam
    assert sorted(np.asarray(atoms.numbers).tolist()) == sorted(np.asarray(ref.numbers).tolist())


def test_orient_lattice_gives_perpendicular_vectors_along_the_zone_axis():
    lat = np.asarray(BUILTIN_CRYSTALS["MoS2"].lattice)
    u, v, w = orient_lattice(lat, (0, 0, 1))
    vecs = np.asarray([u, v, w]) @ lat
    gram = vecs @ vecs.T
    assert np.allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-9)
    assert np.cross(vecs[0], vecs[1]) @ vecs[2] > 0
    with pytest.raises(PtyroValueError, match="zone_axis"):
        orient_lattice(lat, (0, 0, 0))


def test_a_hexagonal_cif_read_through_ase(tmp_path):
    ase_build = pytest.importorskip("ase.build")
    import ase.io

    path = tmp_path / "mg.cif"
    ase.io.write(path, ase_build.bulk("Mg", "hcp", a=3.21, c=5.21))
    with pytest.warns(StructureNote):
        atoms = read_structure(path)
    assert atoms.cell == pytest.approx((3.21, 3.21 * np.sqrt(3), 5.21), rel=1e-5)
    assert len(atoms.numbers) == 4 and set(np.asarray(atoms.numbers).tolist()) == {12}


def test_an_extended_xyz_with_a_hexagonal_lattice_and_a_zone_axis(tmp_path):
    path = tmp_path / "g.extxyz"
    a = 2.46
    path.write_text(f'2\nLattice="{a} 0 0 {-a / 2} {a * np.sqrt(3) / 2} 0 0 0 3.35"\nC 0 {a / np.sqrt(3)} 1.675\nC {a / 2} {a / (2 * np.sqrt(3))} 1.675\n')
    with pytest.warns(StructureNote):
        atoms = read_structure(path)
    assert atoms.cell == pytest.approx((a, a * np.sqrt(3), 3.35), rel=1e-6) and len(atoms.numbers) == 4
    with pytest.raises(PtyroValueError, match="needs a periodic cell"):
        (tmp_path / "m.xyz").write_text("1\nmolecule\nC 0 0 0\n")
        read_structure(tmp_path / "m.xyz", zone_axis=(1, 1, 0))


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

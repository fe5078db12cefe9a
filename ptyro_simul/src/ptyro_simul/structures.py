"""Crystal structures: built-in crystals by name, zone-axis orientation, supercells, and readers.

``build_crystal(name, repeat=(1, 1, 1), zone_axis=(0, 0, 1))`` returns :class:`ptyro_core.Atoms`
in an orthorhombic cell whose z axis (the beam direction) is the zone axis. The orthorhombic
cell is spanned by three mutually orthogonal lattice vectors (u, v, w) of the conventional cell,
w along the zone axis, u × v ∥ w, and x ∥ u, y ∥ v:

- cubic crystals (SrTiO3, Si, Au, GaAs): [001] (u, v) = ([100], [010]); [110]: ([-110], [001]),
  cell a√2 × a × a√2; [111]: ([1-10], [11-2]), cell a√2 × a√6 × a√3.
- hexagonal monolayers (MoS2, graphene): [001] only, orthorhombic a × a√3 cell (6 / 4 atoms
  per cell), the layer centred in a slab of height c (see BUILTIN_CRYSTALS).

Readers: ``read_structure(path, zone_axis=...)`` for XYZ, extended XYZ (``Lattice="..."``)
natively, and CIF / POSCAR (and anything else ASE reads) through ASE, the ``ptyro-simul[ase]``
extra; ``atoms_from_ase(atoms, zone_axis=...)`` for an ``ase.Atoms`` in memory. A malformed
file is refused with the file name, line number and what was expected.

Any periodic structure, whatever its cell (hexagonal, monoclinic, triclinic), is oriented along
any zone axis by :func:`orient_lattice`: it searches the shortest lattice vectors u ⟂ v ⟂ w = the
zone axis and builds that orthorhombic supercell (what ``ptyro_core.Atoms`` holds), with a
:class:`StructureNote` warning saying what it did (a hexagonal a × a cell becomes a × a√3).
"""

import itertools
import math
import re
import shlex
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from ptyro_core import Atoms, PtyroTypeError, PtyroValueError
from ptyro_simul.elements import atomic_number

__all__ = [
    "Crystal",
    "BUILTIN_CRYSTALS",
    "build_crystal",
    "read_structure",
    "atoms_from_ase",
    "orthorhombic_supercell",
    "orient_lattice",
    "StructureNote",
]


class StructureNote(UserWarning):
    """A structure was changed to fit an orthorhombic cell (made orthogonal, oriented)."""


@attrs.frozen
class Crystal:
    """A crystal: conventional lattice vectors (rows, Å), fractional basis, symbols, zone axes."""

    name: str
    lattice: tuple[tuple[float, float, float], ...]
    symbols: tuple[str, ...]
    fractional: tuple[tuple[float, float, float], ...]
    zone_axes: dict[tuple[int, int, int], tuple[tuple[int, int, int], tuple[int, int, int]]] = attrs.field(hash=False)
    description: str = ""


def _fcc(base: tuple[float, float, float]) -> list[tuple[float, float, float]]:
    return [tuple((b + o) % 1.0 for b, o in zip(base, off)) for off in ((0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0))]  # type: ignore[misc]


_CUBIC_AXES = {
    (0, 0, 1): ((1, 0, 0), (0, 1, 0)),
    (1, 1, 0): ((-1, 1, 0), (0, 0, 1)),
    (1, 1, 1): ((1, -1, 0), (1, 1, -2)),
}
_HEX_AXES = {(0, 0, 1): ((1, 0, 0), (1, 2, 0))}


def _cubic(a: float) -> tuple[tuple[float, float, float], ...]:
    return ((a, 0.0, 0.0), (0.0, a, 0.0), (0.0, 0.0, a))


def _hex(a: float, c: float) -> tuple[tuple[float, float, float], ...]:
    return ((a, 0.0, 0.0), (-a / 2, a * math.sqrt(3) / 2, 0.0), (0.0, 0.0, c))


_MOS2_C = 6.5  # Å: slab height of the monolayer cell (layer centred)
_MOS2_SS = 3.17  # Å: S-S distance across the layer
_GRAPHENE_C = 3.35  # Å: slab height of the graphene cell (interlayer spacing of graphite)

#: the built-in crystals by name (lattice constants in Å, room temperature literature values)
BUILTIN_CRYSTALS: dict[str, Crystal] = {
    "SrTiO3": Crystal(
        "SrTiO3", _cubic(3.905), ("Sr", "Ti", "O", "O", "O"),
        ((0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)),
        _CUBIC_AXES, "perovskite, a = 3.905 Å",
    ),
    "Si": Crystal(
        "Si", _cubic(5.431), ("Si",) * 8, tuple(_fcc((0, 0, 0)) + _fcc((0.25, 0.25, 0.25))), _CUBIC_AXES,
        "diamond, a = 5.431 Å",
    ),
    "Au": Crystal("Au", _cubic(4.078), ("Au",) * 4, tuple(_fcc((0, 0, 0))), _CUBIC_AXES, "fcc, a = 4.078 Å"),
    "GaAs": Crystal(
        "GaAs", _cubic(5.653), ("Ga",) * 4 + ("As",) * 4, tuple(_fcc((0, 0, 0)) + _fcc((0.25, 0.25, 0.25))), _CUBIC_AXES,
        "zincblende, a = 5.653 Å",
    ),
    "MoS2": Crystal(
        "MoS2", _hex(3.16, _MOS2_C), ("Mo", "S", "S"),
        ((1 / 3, 2 / 3, 0.5), (2 / 3, 1 / 3, 0.5 - _MOS2_SS / 2 / _MOS2_C), (2 / 3, 1 / 3, 0.5 + _MOS2_SS / 2 / _MOS2_C)),
        _HEX_AXES, "2H monolayer (trigonal prismatic), a = 3.16 Å, S-S 3.17 Å, in a 6.5 Å slab",
    ),
    "graphene": Crystal(
        "graphene", _hex(2.46, _GRAPHENE_C), ("C", "C"), ((1 / 3, 2 / 3, 0.5), (2 / 3, 1 / 3, 0.5)), _HEX_AXES,
        "monolayer, a = 2.46 Å, in a 3.35 Å slab",
    ),
}  # fmt: skip


def orthorhombic_supercell(
    lattice: Any, fractional: Any, numbers: Any, u: Sequence[int], v: Sequence[int], w: Sequence[int], *, tol: float = 1e-6
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Atoms of the supercell spanned by integer lattice vectors (u, v, w) (mutually orthogonal
    within ``tol``, relative), rotated so that u ∥ x, v ∥ y, w ∥ z. Returns (positions (n, 3) Å,
    numbers (n,), cell)."""
    lat = np.asarray(lattice, dtype=np.float64)
    m = np.asarray([u, v, w], dtype=np.int64)
    vecs = m @ lat
    lengths = np.linalg.norm(vecs, axis=1)
    gram = vecs @ vecs.T
    if np.max(np.abs(gram - np.diag(np.diag(gram)))) > tol * max(lengths) ** 2:
        raise PtyroValueError(f"zone axis: the cell vectors {m.tolist()} are not mutually orthogonal")
    det = int(round(abs(np.linalg.det(m))))
    frac = np.asarray(fractional, dtype=np.float64)
    nums = np.asarray(numbers)
    corners = np.array(list(itertools.product((0, 1), repeat=3))) @ m
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    ranges = [range(int(lo[i]) - 1, int(hi[i]) + 1) for i in range(3)]
    inv = np.linalg.inv(vecs)
    pos, num = [], []
    for image in itertools.product(*ranges):
        cart = (frac + np.asarray(image)) @ lat
        f = cart @ inv
        f = np.where(np.abs(f - np.round(f)) < 1e-8, np.round(f), f)
        keep = np.all((f >= 0) & (f < 1), axis=1)
        pos.append(f[keep])
        num.append(nums[keep])
    fr = np.concatenate(pos)
    nm = np.concatenate(num)
    if fr.shape[0] != det * frac.shape[0]:
        raise PtyroValueError(f"zone axis: supercell {m.tolist()} holds {fr.shape[0]} atoms, expected {det * frac.shape[0]}")
    cell = (float(lengths[0]), float(lengths[1]), float(lengths[2]))
    return fr * lengths, nm, cell


def orient_lattice(
    lattice: Any, zone_axis: Sequence[int] = (0, 0, 1), *, max_index: int = 6, tol: float = 1e-4
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Integer lattice vectors (u, v, w) spanning an orthorhombic supercell of ``lattice`` (rows,
    Å) with w along ``zone_axis`` [u v w] (direction indices), u ⟂ v ⟂ w (cosines below ``tol``),
    u × v ∥ w, each the shortest such vector with indices up to ``max_index``.

    >>> orient_lattice(((3.16, 0, 0), (-1.58, 2.7368, 0), (0, 0, 6.5)))   # hexagonal [001]
    ((1, 0, 0), (1, 2, 0), (0, 0, 1))
    """
    lat = np.asarray(lattice, np.float64).reshape(3, 3)
    w = np.asarray([int(i) for i in zone_axis], np.int64)
    if len(w) != 3 or not np.any(w):
        raise PtyroValueError(f"zone_axis: expected a non-zero direction [u, v, w], got {list(zone_axis)!r}")
    w = w // math.gcd(*(abs(int(i)) for i in w))
    wc = w @ lat
    rng = range(-max_index, max_index + 1)
    cand = np.array([n for n in itertools.product(rng, repeat=3) if any(n)], np.int64)
    cart = cand @ lat
    length = np.linalg.norm(cart, axis=1)
    perp = np.abs(cart @ wc) < tol * length * np.linalg.norm(wc)
    # shortest first; among equals, prefer non-negative indices, then the direction of a (x)
    along_a = np.round(cart @ lat[0] / (length * np.linalg.norm(lat[0])), 6)
    order = np.lexsort((-along_a, -(cand >= 0).sum(axis=1), np.round(length, 6)))
    ok = [i for i in order if perp[i]]
    if not ok:
        raise PtyroValueError(f"zone_axis {w.tolist()}: no lattice vector perpendicular to it with indices up to {max_index}; expected a rational zone axis")
    u = cand[ok[0]]
    for i in ok[1:]:
        c = cart[i]
        if abs(c @ cart[ok[0]]) < tol * length[i] * length[ok[0]]:
            v = cand[i] if np.cross(cart[ok[0]], c) @ wc > 0 else -cand[i]
            return tuple(int(x) for x in u), tuple(int(x) for x in v), tuple(int(x) for x in w)
    raise PtyroValueError(
        f"zone_axis {w.tolist()}: no two perpendicular lattice vectors across it with indices up to {max_index}; "
        "expected a zone axis with an orthogonal (rectangular) periodic cell"
    )


def orient_periodic(
    lattice: Any, fractional: Any, numbers: Any, zone_axis: Sequence[int] = (0, 0, 1), *, what: str = "structure"
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(positions, numbers, cell) of a periodic structure (``lattice`` rows in Å, fractional
    coordinates) in the orthorhombic supercell along ``zone_axis`` (see :func:`orient_lattice`);
    a :class:`StructureNote` says what was done unless the cell already is that cell."""
    lat = np.asarray(lattice, np.float64).reshape(3, 3)
    u, v, w = orient_lattice(lat, zone_axis)
    pos, num, cell = orthorhombic_supercell(lat, np.mod(np.asarray(fractional, np.float64), 1.0), numbers, u, v, w, tol=1e-4)
    already = (u, v, w) == ((1, 0, 0), (0, 1, 0), (0, 0, 1)) and np.allclose(lat, np.diag(np.diag(lat)), atol=1e-6)
    if not already:
        angles = [
            math.degrees(math.acos(np.clip(lat[i] @ lat[j] / np.linalg.norm(lat[i]) / np.linalg.norm(lat[j]), -1, 1))) for i, j in ((1, 2), (0, 2), (0, 1))
        ]
        warnings.warn(
            StructureNote(
                f"{what}: cell a, b, c = {', '.join(f'{x:.4g}' for x in np.linalg.norm(lat, axis=1))} Å, angles {', '.join(f'{x:.4g}' for x in angles)}° "
                f"oriented along zone axis {list(w)} as the orthorhombic supercell u = {list(u)}, v = {list(v)}, w = {list(w)}: "
                f"{cell[0]:.4g} × {cell[1]:.4g} × {cell[2]:.4g} Å, {len(num)} atoms"
            ),
            stacklevel=3,
        )
    return pos, num, cell


def build_crystal(
    name: str,
    repeat: Sequence[int] = (1, 1, 1),
    zone_axis: Sequence[int] = (0, 0, 1),
    *,
    sigmas: dict[str, float] | float | None = None,
) -> Atoms:
    """A built-in crystal (see :data:`BUILTIN_CRYSTALS`) oriented along ``zone_axis`` (the beam,
    z) and repeated ``repeat`` = (nx, ny, nz) times in its orthorhombic cell. ``sigmas``: rms
    thermal displacement in Å per element symbol (or one value for all), stored in
    ``Atoms.sigmas`` for frozen phonons."""
    key = {k.lower(): k for k in BUILTIN_CRYSTALS}.get(str(name).lower())
    if key is None:
        raise PtyroValueError(f"crystal: unknown name {name!r}; expected one of {', '.join(BUILTIN_CRYSTALS)}")
    crystal = BUILTIN_CRYSTALS[key]
    try:
        za = tuple(int(i) for i in zone_axis)
        rep = tuple(int(i) for i in repeat)
    except (TypeError, ValueError):
        raise PtyroTypeError(f"build_crystal: expected integer triples, got repeat={repeat!r}, zone_axis={zone_axis!r}") from None
    if len(rep) != 3 or min(rep) < 1:
        raise PtyroValueError(f"repeat: expected three positive integers (nx, ny, nz), got {repeat!r}")
    if len(za) != 3 or za not in crystal.zone_axes:
        known = ", ".join("[" + "".join(str(i) for i in k) + "]" for k in crystal.zone_axes)
        raise PtyroValueError(f"zone_axis: {zone_axis!r} is not available for {key}; expected one of {known}")
    u, v = crystal.zone_axes[za]
    numbers = np.array([atomic_number(s) for s in crystal.symbols])
    pos, num, cell = orthorhombic_supercell(crystal.lattice, crystal.fractional, numbers, u, v, za)
    shifts = np.array(list(itertools.product(*(range(r) for r in rep))), dtype=np.float64) * np.asarray(cell)
    pos = (pos[None] + shifts[:, None]).reshape(-1, 3)
    num = np.tile(num, len(shifts))
    order = np.lexsort((pos[:, 0], pos[:, 1], pos[:, 2]))
    pos, num = pos[order], num[order]
    big = (cell[0] * rep[0], cell[1] * rep[1], cell[2] * rep[2])
    # int32 numbers and float32 sigmas, as Atoms keeps them: no one-operation programs to convert them
    return Atoms(pos.astype(np.float32), num.astype(np.int32), cell=big, sigmas=_sigmas(num, sigmas))


def _sigmas(numbers: np.ndarray, sigmas: Any) -> np.ndarray:
    if sigmas is None:
        return np.zeros(numbers.shape, np.float32)  # what Atoms makes of None
    if isinstance(sigmas, (int, float)):
        return np.full(numbers.shape, float(sigmas), np.float32)
    table = {atomic_number(k, where="sigmas"): float(v) for k, v in dict(sigmas).items()}
    return np.array([table.get(int(z), 0.0) for z in numbers], np.float32)


# --------------------------------------------------------------------------- readers


class _Lines:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.lines = path.read_text().splitlines()
        except UnicodeDecodeError as e:
            raise PtyroValueError(f"{path.name}: not a text file (byte {e.start} is not UTF-8); expected an XYZ / extended XYZ file") from None

    def fail(self, lineno: int, expected: str, got: str | None = None) -> None:
        got_text = f", got {got!r}" if got is not None else ""
        raise PtyroValueError(f"{self.path.name}, line {lineno}: expected {expected}{got_text}")


def _parse_lattice(comment: str, f: _Lines) -> np.ndarray | None:
    m = re.search(r'Lattice\s*=\s*"([^"]*)"', comment) or re.search(r"Lattice\s*=\s*(\S+)", comment)
    if not m:
        return None
    try:
        vals = [float(x) for x in m.group(1).split()]
    except ValueError:
        f.fail(2, 'Lattice="ax ay az bx by bz cx cy cz" with nine numbers', m.group(1))
    if len(vals) != 9:
        f.fail(2, 'Lattice="ax ay az bx by bz cx cy cz" with nine numbers', m.group(1))
    mat = np.asarray(vals).reshape(3, 3)
    if abs(np.linalg.det(mat)) < 1e-9:
        f.fail(2, "a Lattice of three independent vectors", m.group(1))
    return mat


def _parse_properties(comment: str, f: "_Lines | None" = None) -> tuple[int, int]:
    """(column of species, column of the first position) from an extended-XYZ Properties=."""
    m = re.search(r"Properties\s*=\s*(\S+)", comment)
    if not m:
        return 0, 1
    fields = m.group(1).strip('"').split(":")
    if f is not None and (len(fields) % 3 or not all(c.isdigit() for c in fields[2::3])):
        f.fail(2, "Properties=name:type:count triples (e.g. species:S:1:pos:R:3)", m.group(1))
    col, species, pos = 0, 0, 1
    for i in range(0, len(fields) - 2, 3):
        name, _, count = fields[i : i + 3]
        if name.lower() == "species":
            species = col
        elif name.lower() == "pos":
            pos = col
        col += int(count)
    return species, pos


def _read_xyz(path: Path, vacuum: float, zone_axis: tuple[int, ...] = (0, 0, 1)) -> Atoms:
    f = _Lines(path)
    if not f.lines:
        f.fail(1, "the number of atoms", "")
    try:
        n = int(f.lines[0].split()[0])
    except (ValueError, IndexError):
        f.fail(1, "the number of atoms (an integer)", f.lines[0])
    if n < 1:
        f.fail(1, "a positive number of atoms", f.lines[0])
    comment = f.lines[1] if len(f.lines) > 1 else ""
    cell = _parse_lattice(comment, f)
    species_col, pos_col = _parse_properties(comment, f)
    numbers, positions = [], []
    for k in range(n):
        lineno = k + 3
        if lineno > len(f.lines):
            f.fail(lineno, f"{n} atom lines (the header says {n}), found {k}")
        parts = shlex.split(f.lines[lineno - 1]) if '"' in f.lines[lineno - 1] else f.lines[lineno - 1].split()
        if len(parts) < max(species_col, pos_col + 2) + 1:
            f.fail(lineno, "'symbol x y z'", f.lines[lineno - 1])
        try:
            numbers.append(atomic_number(parts[species_col], where=f"{path.name}, line {lineno}"))
        except PtyroValueError as e:
            raise PtyroValueError(str(e)) from None
        try:
            positions.append([float(x) for x in parts[pos_col : pos_col + 3]])
        except ValueError:
            f.fail(lineno, "three coordinates x y z in Å", f.lines[lineno - 1])
    pos = np.asarray(positions, dtype=np.float64)
    if not np.all(np.isfinite(pos)):
        f.fail(3, "finite coordinates")
    if cell is None:
        if tuple(zone_axis) != (0, 0, 1):
            raise PtyroValueError(f"{path.name}: zone_axis {list(zone_axis)} needs a periodic cell (an extended-XYZ Lattice=...); expected zone_axis [0, 0, 1]")
        lo = pos.min(axis=0)
        pos = pos - lo + vacuum
        ext = pos.max(axis=0) + vacuum
        return Atoms(pos.astype(np.float32), np.asarray(numbers), cell=(float(ext[0]), float(ext[1]), float(ext[2])))
    diag = np.diag(cell)
    if tuple(zone_axis) == (0, 0, 1) and np.allclose(cell, np.diag(diag), atol=1e-6) and np.all(diag > 0):
        return Atoms(pos.astype(np.float32), np.asarray(numbers), cell=tuple(float(c) for c in diag))
    frac = np.linalg.solve(cell.T, pos.T).T
    opos, onum, box = orient_periodic(cell, frac, np.asarray(numbers), zone_axis, what=path.name)
    return Atoms(opos.astype(np.float32), onum, cell=box)


def atoms_from_ase(ase_atoms: Any, zone_axis: Sequence[int] = (0, 0, 1), *, what: str = "ase.Atoms") -> Atoms:
    """:class:`ptyro_core.Atoms` from an ``ase.Atoms``. A periodic cell of any shape (hexagonal,
    monoclinic, ...) is made the orthorhombic supercell along ``zone_axis`` (with a
    :class:`StructureNote` saying so); an orthorhombic cell along x, y, z with zone [001] is
    kept as it is. A cell-less structure (a molecule) is boxed like an XYZ file, along [001]."""
    cell = np.asarray(ase_atoms.cell, dtype=np.float64).reshape(3, 3)
    za = tuple(int(i) for i in zone_axis)
    if abs(np.linalg.det(cell)) < 1e-9:
        if za != (0, 0, 1):
            raise PtyroValueError(f"{what}: zone_axis {list(za)} needs a periodic cell; the structure has none (expected a crystal, or zone_axis [0, 0, 1])")
        pos = np.asarray(ase_atoms.get_positions(), np.float64)
        pos = pos - pos.min(axis=0) + 2.0
        return Atoms(pos.astype(np.float32), np.asarray(ase_atoms.get_atomic_numbers()), cell=tuple(float(c) for c in pos.max(axis=0) + 2.0))
    frac = np.linalg.solve(cell.T, np.asarray(ase_atoms.get_positions(), np.float64).T).T
    pos, num, box = orient_periodic(cell, frac, np.asarray(ase_atoms.get_atomic_numbers()), za, what=what)
    return Atoms(pos.astype(np.float32), num, cell=box)


def read_structure(path: Any, *, vacuum: float = 2.0, zone_axis: Sequence[int] = (0, 0, 1)) -> Atoms:
    """Read a structure file into :class:`ptyro_core.Atoms`, oriented along ``zone_axis``.

    ``.xyz`` / ``.extxyz``: read natively; an extended-XYZ ``Lattice="..."`` gives the cell,
    otherwise the cell is the atoms' bounding box plus ``vacuum`` Å on every side (zone [001]
    only). Anything else (CIF, POSCAR/CONTCAR, ...) is read with ASE (``pip install
    ptyro-simul[ase]``). A non-orthogonal cell (a hexagonal CIF) or another zone axis gives the
    orthorhombic supercell along the zone axis (see :func:`atoms_from_ase`).
    """
    p = Path(path)
    if not p.is_file():
        raise PtyroValueError(f"path: no such file {str(p)!r}")
    za = tuple(int(i) for i in zone_axis)
    if p.suffix.lower() in (".xyz", ".extxyz"):
        return _read_xyz(p, float(vacuum), za)
    try:
        import ase.io
    except ImportError:
        raise PtyroValueError(f"{p.name}: reading {p.suffix or p.name} files needs ASE; install the extra: pip install 'ptyro-simul[ase]'") from None
    try:
        obj = ase.io.read(str(p))
    except Exception as e:  # noqa: BLE001 - ASE raises many types for malformed files
        raise PtyroValueError(f"{p.name}: ASE could not read it as a structure: {e}") from None
    return atoms_from_ase(obj, za, what=p.name)

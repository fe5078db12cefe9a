"""Chemical element symbols and atomic numbers (Z = 1..103)."""

from ptyro_core import PtyroTypeError, PtyroValueError

__all__ = ["SYMBOLS", "atomic_number", "symbol"]

#: element symbols, index Z - 1
SYMBOLS: tuple[str, ...] = tuple(
    """H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr
    Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb
    Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr""".split()
)
_Z = {s: i + 1 for i, s in enumerate(SYMBOLS)}
_Z_LOWER = {s.lower(): z for s, z in _Z.items()}


def atomic_number(element: "str | int", *, where: str = "element") -> int:
    """Z of an element given by symbol (case-insensitive) or number; raises naming the bad symbol."""
    if isinstance(element, bool):
        raise PtyroTypeError(f"{where}: expected an element symbol or atomic number, got {element!r}")
    if isinstance(element, int):
        if not 1 <= element <= len(SYMBOLS):
            raise PtyroValueError(f"{where}: atomic number {element} is outside 1..{len(SYMBOLS)}")
        return element
    if not isinstance(element, str):
        raise PtyroTypeError(f"{where}: expected an element symbol or atomic number, got {element!r}")
    key = element.strip()
    if key.isdigit():
        return atomic_number(int(key), where=where)
    z = _Z.get(key) or _Z_LOWER.get(key.lower())
    if z is None:
        raise PtyroValueError(f"{where}: unknown element symbol {element!r}; expected one of H, He, ..., Lr (Z = 1..103)")
    return z


def symbol(z: int) -> str:
    """Element symbol of atomic number ``z``."""
    return SYMBOLS[atomic_number(int(z)) - 1]

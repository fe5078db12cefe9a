"""Chemical symbols <-> atomic numbers (1..103), with errors naming the bad symbol."""

import difflib

from ptyro_core import PtyroValueError

__all__ = ["SYMBOLS", "atomic_number", "symbol"]

SYMBOLS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
    "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu "
    "Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf Es Fm Md No Lr"
).split()
_Z = {s: i + 1 for i, s in enumerate(SYMBOLS)}


def atomic_number(sym: str, where: str = "element") -> int:
    """Z of a chemical symbol (case as written: 'Sr'); raises naming the closest symbol."""
    s = str(sym).strip()
    if s in _Z:
        return _Z[s]
    cap = s.capitalize()
    if cap in _Z:
        return _Z[cap]
    close = difflib.get_close_matches(cap, SYMBOLS, n=1)
    hint = f"; closest match: {close[0]!r}" if close else ""
    raise PtyroValueError(f"{where}: unknown element {sym!r}; expected a chemical symbol H..Lr{hint}")


def symbol(z: int) -> str:
    return SYMBOLS[int(z) - 1]

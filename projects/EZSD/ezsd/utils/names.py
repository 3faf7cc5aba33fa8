"""The one check that two class lists are the same, in the same order.

A text-embedding file, a feature store or a model paired with another class list (another order,
another vocabulary) fails silently with AP ~ 0, so every such pairing is checked with this and
reported the same way: where the lists first differ.
"""

from .errors import UserInputError

__all__ = ["names_difference", "check_names_match"]


def names_difference(names, expected):
    """None when `names` equals `expected` (same names, same order); else where they first
    differ: "3 classes but 2 are expected" or "class 1 is 'lime' but 'kiwi' is expected"."""
    names, expected = list(names), list(expected)
    if len(names) != len(expected):
        return f"{len(names)} classes but {len(expected)} are expected"
    for i, (got, want) in enumerate(zip(names, expected)):
        if got != want:
            return f"class {i} is '{got}' but '{want}' is expected"
    return None


def check_names_match(names, expected, what, hint=""):
    """Raise UserInputError "WHAT: <names_difference>[; HINT]" unless the two lists are equal."""
    difference = names_difference(names, expected)
    if difference is not None:
        raise UserInputError(f"{what}: {difference}" + (f"; {hint}" if hint else ""))

"""The API's keyword options checked by name and type before the engine sees them.

The CLI's parser gives the engine an int for an int option; a notebook can pass anything, and a
"32" for `image_size` would otherwise end as a TypeError deep in a check. Each value must be of
its field's type (an int for a float, numpy's numbers and a Path for a str are fine); what is not
is a UserError naming the keyword.
"""

from __future__ import annotations

import numbers
import os
import types
import typing
from dataclasses import fields, replace

import numpy as np

from siamcli.errors import UserError


def checked_options(cls, given: dict, exclude: set[str] = frozenset()) -> dict:
    """`given` as keyword options of `cls`: unknown names refused, values of the field's type."""
    known = {f.name for f in fields(cls)} - set(exclude)
    unknown = sorted(set(given) - known)
    if unknown:
        raise UserError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; {cls.__name__} has {', '.join(sorted(known))}")
    hints = typing.get_type_hints(cls)
    return {name: typed(name, value, hints[name]) for name, value in given.items()}


def checked_instance(options, cls, name: str):
    """An options dataclass given whole (`config=`, `options=`), its fields checked the same way."""
    if not isinstance(options, cls):
        raise UserError(f"{name} takes {cls.__name__}(...), not a {type(options).__name__}")
    hints = typing.get_type_hints(cls)
    return replace(options, **{f.name: typed(f.name, getattr(options, f.name), hints[f.name]) for f in fields(options)})


def count(name: str, value) -> int:
    """A whole number of at least 1 (k, batch_size)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
        raise UserError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise UserError(f"{name} must be at least 1, got {value}")
    return int(value)


def typed(name: str, value, hint):
    """`value` as the type `hint` names (int, float, str, bool, tuple[int, ...], or X | None)."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    for kind in typing.get_args(hint) if union else (hint,):
        converted = _as(value, kind)
        if converted is not _NO:
            return converted
    raise UserError(f"{name} must be {_describe(hint)}, got {value!r}")


_NO = object()


def _as(value, kind):
    is_bool = isinstance(value, (bool, np.bool_))
    if kind is type(None):
        return None if value is None else _NO
    if kind is bool:
        return bool(value) if is_bool else _NO
    if kind is int:
        return int(value) if isinstance(value, numbers.Integral) and not is_bool else _NO
    if kind is float:
        return float(value) if isinstance(value, numbers.Real) and not is_bool else _NO
    if kind is str:
        return os.fspath(value) if isinstance(value, (str, os.PathLike)) else _NO
    if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)):
        items = [_as(item, typing.get_args(kind)[0]) for item in value]
        return _NO if any(item is _NO for item in items) else tuple(items)
    return _NO


def _describe(hint) -> str:
    names = {int: "an int", float: "a number", str: "a str", bool: "True or False", type(None): "None"}
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = typing.get_args(hint) if union else (hint,)
    return " or ".join(names.get(kind, "a list of ints" if typing.get_origin(kind) is tuple else str(kind)) for kind in kinds)

"""Several flat fields of many samples written in one pass: one update per sample, all the fields in it.

FiftyOne's ``set_values`` writes one field per call, one update per sample each time: a step that writes three
scores to 1M samples sends 3M updates (131 s of the 233 s edges step at 1M, BENCH ``scale_end_to_end_1m``'s
profile). :func:`set_sample_fields` sends 1M, each setting the three fields and ``last_modified_at`` as
``set_values`` does, through the dataset's own bulk writer (which also refreshes samples held in memory).

Only flat values (numbers, strings, booleans, None): a label or a list goes through ``set_values``, which knows how
to serialise it.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from curate_loop.errors import InvalidInputError

_FIELD_TYPES = {"f": "FloatField", "i": "IntField", "u": "IntField", "b": "BooleanField", "U": "StringField"}
UPDATES_PER_WRITE = 100_000  # updates built and sent at once: memory stays O(this), not O(samples)


def set_sample_fields(samples, ids, columns: dict) -> int:
    """Set ``columns`` (field name -> one value per id: a numpy array, or a list with None for "unset") on the
    samples ``ids`` of ``samples``; returns how many samples were written.

    A missing field is declared with the type of its values (float, int, bool or str); an existing one must have
    that type. Everything is checked before the first write."""
    import fiftyone.core.fields as fof
    from bson import ObjectId
    from pymongo import UpdateOne

    dataset = samples._dataset
    ids = [str(i) for i in ids]
    values = {name: _plain_column(name, column, len(ids)) for name, column in columns.items()}
    declare = {}
    for name, (column, kind) in values.items():
        wanted = getattr(fof, _FIELD_TYPES[kind or "f"])  # all None: a new field is a float one
        if dataset.has_sample_field(name) and kind is None:
            continue  # None unsets a field of any type
        if dataset.has_sample_field(name):
            field = dataset.get_field(name)
            if not isinstance(field, wanted) and not (kind in "iu" and isinstance(field, fof.FloatField)):
                raise InvalidInputError(f"Field {name!r} of {dataset.name!r} is a {type(field).__name__}, but these "
                                        f"values are {wanted.__name__} values; delete the field or write another.")
        else:
            declare[name] = wanted
    for name, ftype in declare.items():
        dataset.add_sample_field(name, ftype)
    names = list(values)
    written = 0
    for start in range(0, len(ids), UPDATES_PER_WRITE):
        now = datetime.utcnow()
        chunk = ids[start:start + UPDATES_PER_WRITE]
        rows = zip(*(values[name][0][start:start + UPDATES_PER_WRITE] for name in names))
        ops = [UpdateOne({"_id": ObjectId(i)}, {"$set": {**dict(zip(names, row)), "last_modified_at": now}})
               for i, row in zip(chunk, rows)]
        dataset._bulk_write(ops, ids=chunk)
        written += len(ops)
    return written


def _plain_column(name: str, column, n: int) -> tuple[list, str | None]:
    """``column`` as a list of plain Python values (None kept, numpy scalars unwrapped) and its kind: "f", "i",
    "b" or "U" (numpy's letters), None when every value is None."""
    if isinstance(column, np.ndarray):
        if column.ndim != 1 or column.dtype.kind not in _FIELD_TYPES:
            raise InvalidInputError(f"Field {name!r}: expected a 1-d array of numbers, strings or booleans, got "
                                    f"dtype {column.dtype} and shape {column.shape}.")
        as_list, kinds = column.tolist(), {column.dtype.kind}
    else:
        as_list = [v.item() if isinstance(v, np.generic) else v for v in column]
        kinds = {_KIND_OF.get(type(v), "?") for v in as_list if v is not None}
    if len(as_list) != n:
        raise InvalidInputError(f"Field {name!r}: {len(as_list)} values for {n} samples; give one value per sample "
                                "(None to leave it unset).")
    if not kinds:
        return as_list, None  # all None: fits a field of any type
    if kinds == {"f", "i"}:
        kinds = {"f"}
    if len(kinds) != 1 or next(iter(kinds)) not in _FIELD_TYPES:
        raise InvalidInputError(f"Field {name!r}: set_sample_fields writes numbers, strings or booleans, one kind per "
                                "field; write labels, lists and mixed values with set_values.")
    kind = next(iter(kinds))
    if kind == "f":
        as_list = [None if v is None else float(v) for v in as_list]
    return as_list, kind


_KIND_OF = {float: "f", int: "i", bool: "b", str: "U"}

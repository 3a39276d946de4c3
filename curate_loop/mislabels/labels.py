"""Class labels as integer codes: the vocabulary, and the rows without a usable label set aside.

A label is *missing* when it is None or a float NaN, and *unknown* when a vocabulary was given and the label is not
in it. Both kinds of rows take no part in scoring (they cannot vote and cannot be judged), but they still get a
suggested class from their labeled neighbours.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from curate_loop.errors import InvalidInputError


@dataclass(frozen=True, eq=False)
class EncodedLabels:
    """Labels as codes into ``classes``.

    classes: (C,) object array, the classes that have at least one labeled row, in vocabulary order.
    codes: (n,) int64, the class of each row as an index into ``classes``; -1 for rows set aside.
    missing: (n,) bool, label None or NaN.
    unknown: (n,) bool, label outside the vocabulary that was given.
    absent_classes: vocabulary entries no row carries (they cannot be modelled).
    unknown_values: the distinct labels outside the vocabulary, as text, sorted.
    """

    classes: np.ndarray
    codes: np.ndarray
    missing: np.ndarray
    unknown: np.ndarray
    absent_classes: tuple
    unknown_values: tuple


def is_missing(label) -> bool:
    """None or a float NaN (what pandas and FiftyOne use for 'no label')."""
    return label is None or (isinstance(label, (float, np.floating)) and math.isnan(label))


def encode_labels(labels, classes=None) -> EncodedLabels:
    """Codes for ``labels`` (n,) of class names or ints; ``classes`` fixes the vocabulary and its order.

    Without ``classes`` the vocabulary is every label seen, sorted (by value when the labels compare, else by
    their text), so the same labels always give the same codes.
    """
    values = _as_label_list(labels)
    missing = np.fromiter((is_missing(v) for v in values), dtype=bool, count=len(values))
    present = {_plain(v) for v, m in zip(values, missing) if not m}
    vocabulary = _sorted_classes(present) if classes is None else _check_vocabulary(classes)
    index = {c: i for i, c in enumerate(vocabulary)}
    raw = np.fromiter((-1 if m else index.get(_plain(v), -1) for v, m in zip(values, missing)),
                      dtype=np.int64, count=len(values))
    unknown = (raw < 0) & ~missing
    used = np.zeros(len(vocabulary), dtype=bool)
    used[raw[raw >= 0]] = True
    remap = np.full(len(vocabulary), -1, dtype=np.int64)
    remap[used] = np.arange(int(used.sum()))
    codes = np.where(raw >= 0, remap[np.maximum(raw, 0)], -1)
    kept = np.empty(int(used.sum()), dtype=object)
    kept[:] = [c for c, u in zip(vocabulary, used) if u]
    absent = tuple(c for c, u in zip(vocabulary, used) if not u)
    outside = tuple(sorted({str(v) for v, u in zip(values, unknown) if u}))
    return EncodedLabels(classes=kept, codes=codes, missing=missing, unknown=unknown, absent_classes=absent,
                         unknown_values=outside)


def _as_label_list(labels) -> list:
    if isinstance(labels, (str, bytes)):
        raise InvalidInputError("labels must be a sequence with one class per row, got a single string.")
    arr = np.asarray(labels, dtype=object)
    if arr.ndim != 1:
        raise InvalidInputError(f"labels must be one-dimensional (n,), got shape {arr.shape}.")
    return arr.tolist()


def _plain(value):
    """numpy scalars as Python values, so np.int64(3) and 3 are the same class."""
    return value.item() if isinstance(value, np.generic) else value


def _sorted_classes(values: set) -> list:
    try:
        return sorted(values)
    except TypeError:  # mixed types (e.g. ints and strings): a stable order all the same
        return sorted(values, key=lambda v: (type(v).__name__, str(v)))


def _check_vocabulary(classes) -> list:
    vocabulary = [_plain(c) for c in _as_label_list(classes)]
    if any(is_missing(c) for c in vocabulary):
        raise InvalidInputError("classes must not contain None or NaN; list only real class names.")
    duplicates = sorted(str(c) for c, count in Counter(vocabulary).items() if count > 1)
    if duplicates:
        raise InvalidInputError(f"classes must be distinct, got duplicates {duplicates}.")
    return vocabulary

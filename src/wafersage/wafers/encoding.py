"""The canonical die encoding and the conversions from each source's own values."""

from __future__ import annotations

import numpy as np

OFF, PASS, FAIL = 0, 1, 2
#: Canonical values: 0 off-wafer, 1 pass die, 2 fail die.
CANONICAL_VALUES = (OFF, PASS, FAIL)

#: Per source encoding: raw value -> canonical value.
SOURCE_ENCODINGS: dict[str, dict[int, int]] = {
    "canonical": {0: OFF, 1: PASS, 2: FAIL},
    # WM-811K LSWMD.pkl: 0 off-wafer, 1 pass, 2 fail.
    "lswmd": {0: OFF, 1: PASS, 2: FAIL},
    # The preprocessed pickles in ../shared/data: 0 off-wafer, 128 pass, 255 fail.
    "processed": {0: OFF, 128: PASS, 255: FAIL},
    # MixedWM38 .npz: 0/1/2 and occasionally 3, a noise die that the dataset counts as a fail.
    "mixedwm38_npz": {0: OFF, 1: PASS, 2: FAIL, 3: FAIL},
}


def to_canonical(arr: np.ndarray, encoding: str) -> np.ndarray:
    """Map a 2-D array from ``encoding`` to canonical uint8; raise ``ValueError`` naming the
    first value outside the encoding."""
    table = SOURCE_ENCODINGS[encoding]
    a = np.asarray(arr)
    if a.dtype.kind == "f":
        if np.isnan(a).any():
            raise ValueError("map contains NaN")
        if not np.all(a == np.round(a)):
            raise ValueError("map contains non-integer values")
    if a.dtype.kind not in "uifb":
        raise ValueError(f"map has non-numeric dtype {a.dtype}")
    a = a.astype(np.int64, copy=False)
    lut = np.full(256, 255, dtype=np.uint8)
    for raw, canon in table.items():
        lut[raw] = canon
    bad = (a < 0) | (a > 255)
    if not bad.any():
        out = lut[a]
        bad = out == 255
    if bad.any():
        value = int(a[bad].flat[0])
        raise ValueError(f"value {value} outside the {encoding} encoding {sorted(table)}")
    return out

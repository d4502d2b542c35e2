"""Geometric and density features of wafer maps, vectorised over the whole raw table.

The one place these features are defined; the clean stage, VQA attributes and benchmarks import
them. Geometry is the generator's (see :mod:`wafersage.wafers.synthetic`): die ``(i, j)`` sits at
``x = (j + 0.5 - cols/2) / (cols/2)``, ``y = (i + 0.5 - rows/2) / (rows/2)`` (down positive),
``r = hypot(x, y)``, clock angle ``deg = atan2(x, -y) mod 360`` (clockwise from 12 o'clock).
On-wafer dies are those the map marks on-wafer (not a fixed circle), so real maps work too.

Wafers are grouped by ``(rows, cols)``; each group is stacked into one array and every feature is
computed with numpy/scipy on the stack (no Python loop per wafer). A map with no on-wafer die
gets NaN features (callers decide whether that is an error).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from wafersage.wafers.encoding import FAIL, OFF
from wafersage.wafers.synthetic import ZONE_CENTER_MAX, ZONE_INNER_MAX, ZONE_MIDDLE_MAX

#: Ring names and their upper bounds on normalised radius (the generator's zone thresholds).
RINGS: tuple[tuple[str, float], ...] = (
    ("center", ZONE_CENTER_MAX),
    ("inner", ZONE_INNER_MAX),
    ("middle", ZONE_MIDDLE_MAX),
    ("edge", np.inf),
)
RADIAL_BINS = 10  # equal-width bins of r over [0, 1]; dies beyond r = 1 fall in the last
SECTORS = 8  # angular sectors over the whole wafer
EDGE_SECTORS = 12  # angular sectors of the edge ring (clock hours)
EDGE_COVERAGE_MIN = 0.3  # an edge sector this dense counts as covered
MIN_COMPONENT = 3  # smallest fail component counted in comp_count
CHUNK = 5_000  # wafers stacked at once (5,000 80x80 maps: 128 MB per float32 work array)

_BINNED = (
    [f"dens_{name}" for name, _ in RINGS]
    + [f"radial_{k}" for k in range(RADIAL_BINS)]
    + [f"sector_{k}" for k in range(SECTORS)]
    + [f"edge_sector_{k}" for k in range(EDGE_SECTORS)]
)

#: Feature columns, in output order.
COLUMNS: tuple[str, ...] = (
    "n_on",
    "fail_frac",
    "yield",
    *[f"dens_{name}" for name, _ in RINGS],
    *[f"radial_{k}" for k in range(RADIAL_BINS)],
    "radial_slope",
    "sector_max",
    "sector_min",
    "sector_std",
    "sector_contrast",
    "edge_sector_max",
    "edge_sector_min",
    "edge_sector_std",
    "edge_coverage",
    "fail_cx",
    "fail_cy",
    "fail_centroid_r",
    "fail_mean_r",
    "fail_std_r",
    "fail_clustering",
    "dense_frac",
    "comp_count",
    "comp_area",
    "comp_area2",
    "comp_share",
    "comp_ecc",
    "comp_elong",
    "comp_x",
    "comp_y",
    "comp_r",
    "comp_mean_r",
    "comp_std_r",
    "comp_clock_deg",
)


@lru_cache(maxsize=256)  # about 0.3 MB a shape; real data has hundreds of shapes
def geometry(rows: int, cols: int) -> dict[str, np.ndarray]:
    """Per-die normalised ``x, y, r, theta`` (radians clockwise from 12) of a ``rows x cols`` grid,
    flattened row-major, plus the bin-indicator matrix used for all binned densities."""
    y1 = (np.arange(rows) + 0.5 - rows / 2) / (rows / 2)
    x1 = (np.arange(cols) + 0.5 - cols / 2) / (cols / 2)
    yy, xx = np.meshgrid(y1, x1, indexing="ij")
    x, y = xx.ravel(), yy.ravel()
    r = np.hypot(x, y)
    theta = np.mod(np.arctan2(x, -y), 2 * np.pi)
    bounds = np.array([b for _, b in RINGS])
    ring = np.searchsorted(bounds, r, side="right")
    ring = np.minimum(ring, len(RINGS) - 1)
    radial = np.minimum((r * RADIAL_BINS).astype(int), RADIAL_BINS - 1)
    sector = np.minimum((theta / (2 * np.pi) * SECTORS).astype(int), SECTORS - 1)
    edge_sector = np.minimum((theta / (2 * np.pi) * EDGE_SECTORS).astype(int), EDGE_SECTORS - 1)
    p = r.size
    ind = np.zeros((p, len(_BINNED)), dtype=np.float32)
    off = 0
    for idx, width in ((ring, len(RINGS)), (radial, RADIAL_BINS), (sector, SECTORS)):
        ind[np.arange(p), off + idx] = 1.0
        off += width
    in_edge = r >= ZONE_MIDDLE_MAX
    ind[np.flatnonzero(in_edge), off + edge_sector[in_edge]] = 1.0
    moments = np.stack([np.ones(p), x, y, r, r * r], axis=1).astype(np.float32)
    out = {"x": x, "y": y, "r": r, "theta": theta, "ind": ind, "moments": moments}
    for a in out.values():
        a.setflags(write=False)
    return out


def fail_neighbours(fail: np.ndarray) -> np.ndarray:
    """Count of failing 8-neighbours of each die, for a stack ``(n, rows, cols)``."""
    n, rows, cols = fail.shape
    pad = np.zeros((n, rows + 2, cols + 2), dtype=np.uint8)
    pad[:, 1:-1, 1:-1] = fail
    out = np.zeros(fail.shape, dtype=np.uint8)
    for di in (0, 1, 2):
        for dj in (0, 1, 2):
            if di != 1 or dj != 1:
                out += pad[:, di : di + rows, dj : dj + cols]
    return out


def _components(dense: np.ndarray, g: dict[str, np.ndarray], n_on: np.ndarray) -> dict[str, np.ndarray]:
    """Largest (and second) 8-connected fail component per wafer of a stack, with its shape."""
    from scipy import ndimage

    n, rows, cols = dense.shape
    p = rows * cols
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # connect within a wafer only
    lab, nlab = ndimage.label(dense, structure=structure)
    flat = lab.ravel()
    pix = np.flatnonzero(flat)
    labels = flat[pix]
    pos = pix % p
    area = np.bincount(labels, minlength=nlab + 1).astype(np.float64)
    x, y, r = g["x"][pos], g["y"][pos], g["r"][pos]

    def s(w: np.ndarray) -> np.ndarray:
        return np.bincount(labels, weights=w, minlength=nlab + 1)

    sx, sy, sxx, syy, sxy, sr, srr = s(x), s(y), s(x * x), s(y * y), s(x * y), s(r), s(r * r)
    owner = np.zeros(nlab + 1, dtype=np.int64)
    owner[labels] = pix // p
    out = {k: np.zeros(n) for k in ("comp_count", "comp_area", "comp_area2", "comp_ecc", "comp_elong")}
    out.update({k: np.full(n, np.nan) for k in ("comp_x", "comp_y", "comp_r", "comp_mean_r", "comp_std_r")})
    out["comp_clock_deg"] = np.full(n, np.nan)
    out["comp_elong"][:] = 1.0
    if nlab == 0:
        return _finish_components(out, n_on)
    ids = np.arange(1, nlab + 1)
    big = area[ids] >= MIN_COMPONENT
    out["comp_count"] = np.bincount(owner[ids][big], minlength=n).astype(float)
    order = np.lexsort((-area[ids], owner[ids]))
    ranked = ids[order]
    first = np.flatnonzero(np.r_[True, owner[ranked][1:] != owner[ranked][:-1]])
    top = ranked[first]
    w = owner[top]
    a = area[top]
    mx, my = sx[top] / a, sy[top] / a
    unit2 = (2.0 / max(rows, cols)) ** 2 / 12.0  # a die's own extent
    cxx = sxx[top] / a - mx * mx + unit2
    cyy = syy[top] / a - my * my + unit2
    cxy = sxy[top] / a - mx * my
    half_tr = (cxx + cyy) / 2
    disc = np.sqrt(np.maximum(((cxx - cyy) / 2) ** 2 + cxy * cxy, 0.0))
    l1, l2 = half_tr + disc, np.maximum(half_tr - disc, 1e-12)
    out["comp_area"][w] = a
    out["comp_ecc"][w] = np.sqrt(np.clip(1.0 - l2 / l1, 0.0, 1.0))
    out["comp_elong"][w] = np.sqrt(l1 / l2)
    out["comp_x"][w], out["comp_y"][w] = mx, my
    out["comp_r"][w] = np.hypot(mx, my)
    mean_r = sr[top] / a
    out["comp_mean_r"][w] = mean_r
    out["comp_std_r"][w] = np.sqrt(np.maximum(srr[top] / a - mean_r**2, 0.0))
    out["comp_clock_deg"][w] = np.degrees(np.mod(np.arctan2(mx, -my), 2 * np.pi))
    second = first + 1
    ok = second < len(ranked)
    ok[ok] = owner[ranked[second[ok]]] == w[ok]
    out["comp_area2"][w[ok]] = area[ranked[second[ok]]]
    return _finish_components(out, n_on)


def _finish_components(out: dict[str, np.ndarray], n_on: np.ndarray) -> dict[str, np.ndarray]:
    """Areas as fractions of the on-wafer dies; a wafer without components sits at the centre."""
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.maximum(n_on, 1)
        out["comp_share"] = np.where(
            out["comp_area"] > 0, out["comp_area2"] / np.maximum(out["comp_area"], 1), 0
        )
        out["comp_area"] = out["comp_area"] / total
        out["comp_area2"] = out["comp_area2"] / total
    for k in ("comp_x", "comp_y", "comp_r", "comp_mean_r", "comp_std_r"):
        out[k] = np.nan_to_num(out[k], nan=0.0)
    out["comp_clock_deg"] = np.nan_to_num(out["comp_clock_deg"], nan=-1.0)
    return out


def _group_features(maps: np.ndarray, rows: int, cols: int) -> dict[str, np.ndarray]:
    """All features of a stack of same-shape maps ``(n, rows*cols)`` uint8."""
    g = geometry(rows, cols)
    n = maps.shape[0]
    on = (maps != OFF).astype(np.float32)
    fail = (maps == FAIL).astype(np.float32)
    n_on = on.sum(1).astype(np.float64)
    n_fail = fail.sum(1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = n_fail / n_on  # NaN where no on-wafer die
        bins_on = on @ g["ind"]
        bins_fail = fail @ g["ind"]
        dens = np.where(bins_on > 0, bins_fail / np.maximum(bins_on, 1), frac[:, None])
        mom = (fail @ g["moments"]).astype(np.float64)
        nf = np.maximum(mom[:, 0], 1)
        f: dict[str, np.ndarray] = {"n_on": n_on, "fail_frac": frac, "yield": 1.0 - frac}
        for k, name in enumerate(_BINNED):
            f[name] = dens[:, k]
        radial = dens[:, len(RINGS) : len(RINGS) + RADIAL_BINS]
        f["radial_slope"] = radial[:, RADIAL_BINS // 2 :].mean(1) - radial[:, : RADIAL_BINS // 2].mean(1)
        s0 = len(RINGS) + RADIAL_BINS
        sectors = dens[:, s0 : s0 + SECTORS]
        f["sector_max"], f["sector_min"], f["sector_std"] = sectors.max(1), sectors.min(1), sectors.std(1)
        f["sector_contrast"] = sectors.max(1) - np.median(sectors, axis=1)
        edge = dens[:, s0 + SECTORS :]
        f["edge_sector_max"], f["edge_sector_min"], f["edge_sector_std"] = (
            edge.max(1),
            edge.min(1),
            edge.std(1),
        )
        f["edge_coverage"] = (edge >= EDGE_COVERAGE_MIN).mean(1)
        has = mom[:, 0] > 0
        f["fail_cx"] = np.where(has, mom[:, 1] / nf, 0.0)
        f["fail_cy"] = np.where(has, mom[:, 2] / nf, 0.0)
        f["fail_centroid_r"] = np.hypot(f["fail_cx"], f["fail_cy"])
        f["fail_mean_r"] = np.where(has, mom[:, 3] / nf, 0.0)
        f["fail_std_r"] = np.sqrt(np.maximum(np.where(has, mom[:, 4] / nf, 0.0) - f["fail_mean_r"] ** 2, 0.0))
        nb = fail_neighbours(fail.reshape(n, rows, cols).astype(bool)).reshape(n, -1)
        f["fail_clustering"] = np.where(has, (nb * fail).sum(1) / (8.0 * nf), 0.0)
        dense = (fail > 0) & (nb >= 2)
        f["dense_frac"] = dense.sum(1) / np.maximum(n_on, 1)
    f.update(_components(dense.reshape(n, rows, cols), g, n_on))
    bad = ~(n_on > 0)
    if bad.any():
        for k in f:
            f[k] = f[k].astype(np.float64)
            f[k][bad] = np.nan
        f["n_on"][bad] = 0.0
    return f


def geometric_features(df: pd.DataFrame) -> pd.DataFrame:
    """One row a wafer (index aligned with ``df``), columns :data:`COLUMNS`; ``df`` needs the raw
    table's ``rows``, ``cols`` and ``map`` columns. Maps without on-wafer dies get NaN features."""
    n = len(df)
    out = np.full((n, len(COLUMNS)), np.nan, dtype=np.float64)
    if n:
        shapes = pd.DataFrame({"r": df["rows"].to_numpy(np.int64), "c": df["cols"].to_numpy(np.int64)})
        blobs = df["map"].to_numpy()
        for (rows, cols), idx in shapes.groupby(["r", "c"], sort=True).indices.items():
            for start in range(0, len(idx), CHUNK):
                part = idx[start : start + CHUNK]
                buf = b"".join(blobs[part].tolist())
                maps = np.frombuffer(buf, dtype=np.uint8).reshape(len(part), rows * cols)
                f = _group_features(maps, int(rows), int(cols))
                out[part] = np.column_stack([f[c] for c in COLUMNS])
    return pd.DataFrame(out, columns=list(COLUMNS), index=df.index)

"""Analytic attributes of a wafer map: where the defect mass lies, what shape it has, how dense.

The geometry is the one :mod:`wafersage.wafers.synthetic` documents (normalised coordinates, clock
positions clockwise from 12, zones by the mean normalised radius of the defect mass), so the
attributes can be checked against the generator's ground truth.

How a map becomes attributes:

1. fail dies are grouped into 8-connected components; a component of at least ``min_size`` dies is
   *structure*, the rest background;
2. for each labelled pattern (labels guide the separation of mixed maps), the components that
   pattern explains are claimed, in a fixed order (wafer-wide classes, edge ring, center, donut,
   edge arc, scratch, local blob), so two patterns never share a component;
3. each claimed defect mass gets zone, clock, radial band, distribution (from its geometry, not
   from the label), area fraction, density, elongation / orientation and angular coverage;
4. :func:`infer_pattern` names a pattern from the geometry alone (no label), which the VQA
   stage uses as a consistency check and the benchmarks score against the truth.

:func:`wafer_attributes_batch` gives the label-free dicts of many maps at once (the grounding
text's source): the maps of one shape are labelled, counted and closed as one stack, and only the
main mass's sums and fits run map by map, with numpy's arithmetic, so every figure is the one
:func:`wafer_attributes` gives.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage

from wafersage.wafers import taxonomy
from wafersage.wafers.encoding import FAIL, OFF
from wafersage.wafers.features import fail_neighbours
from wafersage.wafers.rawtable import decode_map
from wafersage.wafers.synthetic import CLOCK_MIN_R, SYMMETRIC, WHOLE_WAFER, clock_of, zone_of
from wafersage.wafers.taxonomy import NONE

#: The order in which patterns claim components of a mixed map.
CLAIM_ORDER: tuple[str, ...] = (
    "Near-full",
    "Random",
    "Edge-Ring",
    "Center",
    "Donut",
    "Edge-Loc",
    "Scratch",
    "Loc",
)
#: Zones and distributions, in the order the phrasing and the confusion tables use.
ZONES: tuple[str, ...] = ("center", "inner", "middle", "edge", "whole")
DISTRIBUTIONS: tuple[str, ...] = ("clustered", "scattered", "ring", "arc", "line", "full")
#: Fail neighbours (of 8) a die needs to count in a pattern's defect mass.
CORE_NEIGHBOURS: dict[str, int] = {
    "Center": 3,
    "Loc": 3,
    "Donut": 3,
    "Edge-Loc": 2,
    "Edge-Ring": 2,
    "Scratch": 1,
}
#: Random arc/line hypotheses tried per scratch.
SCRATCH_TRIALS = 300
#: Fail dies per die pitch along a streak (background chains are sparser).
SCRATCH_MIN_LINEAR_DENSITY = 0.5
#: Fail fraction above which a map is wafer-wide.
FULL_FRACTION = 0.62
#: Normalised radius beyond which a die belongs to the edge band.
EDGE_BAND_R = 0.8
_EIGHT = np.ones((3, 3), dtype=bool)
#: 8-connectivity within each map of a stack ``(n, rows, cols)``, none across maps.
_EIGHT_STACKED = np.zeros((3, 3, 3), dtype=bool)
_EIGHT_STACKED[1] = True
#: Maps of one shape handled together by :func:`wafer_attributes_batch` (bounds its memory).
BATCH = 1024


@dataclass(frozen=True)
class Geometry:
    """Normalised coordinates of every die of a ``rows`` x ``cols`` grid (flattened)."""

    x: np.ndarray
    y: np.ndarray
    r: np.ndarray
    theta: np.ndarray  # degrees clockwise from 12 o'clock, [0, 360)
    unit: float
    sector: np.ndarray  # the 15-degree sector of theta (what :func:`coverage_deg` counts)
    band_quadrant: np.ndarray  # 3 radial bands x 4 quadrants (what :func:`wafer_wide` compares)


@lru_cache(maxsize=1024)
def geometry(rows: int, cols: int) -> Geometry:
    """The normalised die geometry of a grid (cached per shape, read-only)."""
    y1 = (np.arange(rows) + 0.5 - rows / 2) / (rows / 2)
    x1 = (np.arange(cols) + 0.5 - cols / 2) / (cols / 2)
    yy, xx = np.meshgrid(y1, x1, indexing="ij")
    x, y = xx.ravel(), yy.ravel()
    r = np.hypot(x, y)
    theta = np.mod(np.degrees(np.arctan2(x, -y)), 360.0)
    sector = (theta // 15.0).astype(np.int64)
    band_quadrant = np.minimum((r * 3).astype(np.int64), 2) * 4 + (theta // 90).astype(np.int64)
    for a in (x, y, r, theta, sector, band_quadrant):
        a.setflags(write=False)
    return Geometry(x, y, r, theta, 2.0 / max(rows, cols), sector, band_quadrant)


def _r3(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 3)


def coverage_deg(theta: np.ndarray, bin_deg: float = 15.0) -> float:
    """Angular coverage of a set of dies: occupied ``bin_deg`` sectors times the sector width."""
    if theta.size == 0:
        return 0.0
    bins = np.unique((theta // bin_deg).astype(np.int64))
    return float(bins.size * bin_deg)


def _quantiles(values: np.ndarray, start: np.ndarray, n: np.ndarray, q: float) -> np.ndarray:
    """``np.percentile(v, 100 * q)`` (linear interpolation) of each segment ``v`` of ``values``
    (sorted within segments; segment j starts at ``start[j]``, ``n[j] >= 1`` long), with numpy's
    arithmetic step by step, so each figure is the same to the last bit."""
    virtual = (n - 1) * q
    below = np.floor(virtual)
    last = virtual >= n - 1
    lo = np.where(last, n - 1, below.astype(np.int64))
    hi = np.where(last, n - 1, lo + 1)
    a, b, t = values[start + lo], values[start + hi], virtual - below
    diff = b - a
    return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def _fit_residual_std(u: np.ndarray, v: np.ndarray) -> float:
    """Standard deviation of ``v`` around its least-squares quadratic in ``u``: the steps of
    ``v - np.polyval(np.polyfit(u, v, 2), u)``, without their argument checks."""
    lhs = np.vander(u + 0.0, 3)
    scale = np.sqrt((lhs * lhs).sum(axis=0))
    lhs /= scale
    coef = np.linalg.lstsq(lhs, v + 0.0, len(u) * np.finfo(u.dtype).eps)[0] / scale
    fit = np.zeros_like(u)
    for c in coef:
        fit = fit * u + c
    return float((v - fit).std())


def shapes_of(geo: Geometry, masses: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """Geometry of each defect mass (non-empty flat die indices): position, spread, shape.

    Sums, covariances and quadratic fits run mass by mass, in numpy's own order, so a figure
    never depends on the other masses; eigen-decompositions, quantiles and counts run over all
    masses at once."""
    k = len(masses)
    n = np.array([m.size for m in masses], dtype=np.int64)
    start = np.cumsum(n) - n
    seg = np.repeat(np.arange(k), n)
    idx = np.concatenate(masses) if k else np.zeros(0, dtype=np.int64)
    x, y, r = geo.x[idx], geo.y[idx], geo.r[idx]
    cx, cy, mean_r = np.zeros(k), np.zeros(k), np.zeros(k)
    cov = np.zeros((k, 2, 2))
    for j, (s, size) in enumerate(zip(start.tolist(), n.tolist(), strict=True)):
        xs, ys = x[s : s + size], y[s : s + size]
        cx[j], cy[j], mean_r[j] = xs.mean(), ys.mean(), r[s : s + size].mean()
        if size >= 2:  # np.cov's steps
            xy = np.vstack([xs, ys])
            xy -= xy.mean(axis=1)[:, None]
            c = np.dot(xy, xy.T.conj())
            c *= np.true_divide(1, size - 1)
            cov[j] = c
    spread = np.flatnonzero(n >= 2)
    evals, evecs = np.ones((k, 2)), np.zeros((k, 2, 2))
    if spread.size:
        evals[spread], evecs[spread] = np.linalg.eigh(cov[spread] + np.eye(2) * (geo.unit**2 / 12.0))
    elong = np.sqrt(evals[:, 1] / evals[:, 0])
    major = evecs[:, :, 1]
    # a bent streak: thin around its best quadratic, long along its axis
    bent = (n >= 8)[seg]
    dx, dy = x[bent] - cx[seg[bent]], y[bent] - cy[seg[bent]]
    u = dx * major[seg[bent], 0] + dy * major[seg[bent], 1]
    v = -dx * major[seg[bent], 1] + dy * major[seg[bent], 0]
    resid = dict.fromkeys(np.flatnonzero(n >= 8).tolist(), 0.0)
    at = 0
    for j in resid:
        resid[j] = _fit_residual_std(u[at : at + n[j]], v[at : at + n[j]])
        at += n[j]

    order = np.lexsort((r, seg))
    r_inner = _quantiles(r[order], start, n, 10 / 100)
    r_outer = _quantiles(r[order], start, n, 90 / 100)
    away = r >= 0.2
    occupied = np.zeros((k, int(geo.sector.max()) + 1), dtype=bool)
    occupied[seg[away], geo.sector[idx[away]]] = True
    rim = np.bincount(seg, weights=r >= 0.9, minlength=k) / np.maximum(n, 1)
    inside = np.bincount(seg, weights=r < np.maximum(0.5 * mean_r, geo.unit)[seg], minlength=k) / np.maximum(
        n, 1
    )
    out = []
    for j in range(k):
        if n[j] >= 2:
            e = float(elong[j])
            if j in resid:
                e = max(e, math.sqrt(evals[j, 1]) / max(resid[j], geo.unit / 2))
            # the major axis as a clock direction (0-180 degrees clockwise from 12)
            orient = math.degrees(math.atan2(major[j, 0], -major[j, 1])) % 180.0
            length = 4.0 * math.sqrt(evals[j, 1])
        else:
            e, orient, length = 1.0, 0.0, geo.unit
        out.append(
            {
                "n_dies": int(n[j]),
                "mean_r": float(mean_r[j]),
                "r_inner": float(r_inner[j]),
                "r_outer": float(r_outer[j]),
                "centroid_x": float(cx[j]),
                "centroid_y": float(cy[j]),
                "centroid_r": math.hypot(cx[j], cy[j]),
                "elongation": e,
                "orientation_deg": orient,
                "length": length,
                "coverage_deg": float(occupied[j].sum() * 15.0),
                "rim_fraction": float(rim[j]),
                "hole": bool(n[j] >= 6 and inside[j] < 0.02 and mean_r[j] > 0.15),
            }
        )
    return out


def distribution_of(s: dict[str, Any]) -> str:
    """The spatial distribution of one localised defect mass, from its geometry only."""
    if s["elongation"] >= 3.0 and s["rim_fraction"] < 0.5:
        return "line"
    if s["mean_r"] >= 0.72 and s["rim_fraction"] >= 0.3:
        return "ring" if s["coverage_deg"] >= 180 else "arc"
    if s["hole"] and s["coverage_deg"] >= 200:
        return "ring"
    return "clustered"


def _components(fail2d: np.ndarray) -> tuple[np.ndarray, int]:
    lab, n = ndimage.label(fail2d, structure=_EIGHT)
    return lab.ravel(), n


def _closing(masks: np.ndarray) -> np.ndarray:
    """The binary closing of each mask of a stack ``(n, rows, cols)`` by the 3 x 3 square, with
    the grid's outside off (``ndimage.binary_closing`` of each map with that structure), as
    dilation and erosion by rows then by columns."""
    grown = masks.copy()
    grown[:, :, 1:] |= masks[:, :, :-1]
    grown[:, :, :-1] |= masks[:, :, 1:]
    wide = grown.copy()
    wide[:, 1:] |= grown[:, :-1]
    wide[:, :-1] |= grown[:, 1:]
    shrunk = wide.copy()
    shrunk[:, :, 1:] &= wide[:, :, :-1]
    shrunk[:, :, :-1] &= wide[:, :, 1:]
    shrunk[:, :, [0, -1]] = False
    out = shrunk.copy()
    out[:, 1:] &= shrunk[:, :-1]
    out[:, :-1] &= shrunk[:, 1:]
    out[:, [0, -1]] = False
    return out


def _densities(masks: np.ndarray, on: np.ndarray, fail: np.ndarray) -> list[float]:
    """Fail share of the on-wafer dies inside the (closed) region of each defect mass of a stack
    ``(n, rows, cols)`` of masks, on-wafer and fail dies."""
    region = _closing(masks) | masks
    region &= on
    dies = region.sum((1, 2))
    fails = (fail & region).sum((1, 2))
    return [float(f / n) if n else 0.0 for f, n in zip(fails.tolist(), dies.tolist(), strict=True)]


class _Claimer:
    """Components of one map and the patterns that have claimed them."""

    def __init__(self, m: np.ndarray, min_size: int):
        self.m = m
        self.geo = geometry(*m.shape)
        self.on = m.ravel() != OFF
        self.fail = m.ravel() == FAIL
        self.lab, n = _components(m == FAIL)
        sizes = np.bincount(self.lab, minlength=n + 1)
        sizes[0] = 0
        self.sizes = sizes
        f2 = (m == FAIL).astype(np.int64)
        nb = ndimage.convolve(f2, _EIGHT.astype(np.int64), mode="constant") - f2
        self.nb = nb.ravel()
        self.links = np.bincount(self.lab, weights=(nb.ravel() * f2.ravel()), minlength=n + 1)
        self.links[0] = 0
        self.free = _free(sizes)
        self.min_size = min_size
        self.claimed: set[int] = set()
        r = self.geo.r
        with np.errstate(invalid="ignore", divide="ignore"):
            self.mean_r = np.bincount(self.lab, weights=r, minlength=n + 1) / np.maximum(sizes, 1)
            self.band = np.bincount(self.lab, weights=(r >= EDGE_BAND_R), minlength=n + 1) / np.maximum(
                sizes, 1
            )
            self.rim = np.bincount(self.lab, weights=(r >= 0.9), minlength=n + 1) / np.maximum(sizes, 1)

    def dies(self, comps: list[int]) -> np.ndarray:
        if not comps:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(np.isin(self.lab, comps))

    def take(self, comps: list[int]) -> np.ndarray:
        self.free -= set(comps)
        self.claimed |= set(comps)
        return self.dies(comps)

    def core(self, idx: np.ndarray, k: int) -> np.ndarray:
        """The dies of a mass with at least ``k`` fail neighbours (drops attached background
        chains); the whole mass when fewer than 3 would remain."""
        keep = idx[self.nb[idx] >= k]
        return keep if keep.size >= 3 else idx

    def big(self) -> list[int]:
        return _big(self.free, self.sizes, self.min_size)

    def density(self, idx: np.ndarray) -> float:
        """:func:`_densities` of the mass of dies ``idx``."""
        mask = np.zeros(self.m.size, dtype=bool)
        mask[idx] = True
        shape = (1, *self.m.shape)
        return _densities(mask.reshape(shape), self.on.reshape(shape), self.fail.reshape(shape))[0]

    # --- one selector a pattern family ---

    def whole(self) -> np.ndarray:
        self.claimed |= self.free
        self.free.clear()
        return np.flatnonzero(self.fail)

    def edge_ring(self) -> np.ndarray:
        comps = [c for c in self.big() if self.band[c] >= 0.6]
        return self.take(comps)

    def center(self) -> np.ndarray:
        comps = [c for c in self.big() if self._centroid_r(c) < 0.35]
        return self.take(sorted(comps, key=lambda c: -self.links[c])[:1])

    def donut(self) -> np.ndarray:
        comps = [c for c in self.big() if 0.12 <= self.mean_r[c] < 0.75 and self.rim[c] < 0.3]
        return self.take(comps)

    def edge_loc(self) -> np.ndarray:
        comps = sorted((c for c in self.big() if self.mean_r[c] >= 0.6), key=lambda c: -self.links[c])
        if not comps:
            return self.take([])
        seed = comps[0]
        th = self.geo.theta[self.dies([seed])]
        mid = _circular_mean(th)
        half = max(coverage_deg(th) / 2 + 15.0, 25.0)
        near = [c for c in comps[1:] if _angdist(_circular_mean(self.geo.theta[self.dies([c])]), mid) <= half]
        return self.take([seed, *near])

    def scratch(self) -> np.ndarray:
        """RANSAC over circular arcs and straight lines through unclaimed fail dies: the arc with
        the longest contiguous run of dies near it (gaps of at most 2.5 die pitches)."""
        geo = self.geo
        taken = np.isin(self.lab, list(self.claimed)) if self.claimed else np.zeros(self.lab.size, bool)
        pts = np.flatnonzero(self.fail & (geo.r < 0.9))  # the rim is a circle of its own
        # a streak may cross another pattern; dies already claimed count for less
        weight = np.where(taken[pts], 0.25, 1.0)
        if pts.size < 3:
            return self.take([])
        seeds = pts[(self.nb[pts] >= 1) & ~taken[pts]]
        if seeds.size < 3:
            return self.take([])
        x, y = geo.x[pts], geo.y[pts]
        rng = np.random.default_rng(0)
        k = SCRATCH_TRIALS
        tri = seeds[rng.integers(0, seeds.size, size=(k, 3))]
        ax, ay = geo.x[tri[:, 0]], geo.y[tri[:, 0]]
        bx, by = geo.x[tri[:, 1]], geo.y[tri[:, 1]]
        cx, cy = geo.x[tri[:, 2]], geo.y[tri[:, 2]]
        d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ux = ((ax**2 + ay**2) * (by - cy) + (bx**2 + by**2) * (cy - ay) + (cx**2 + cy**2) * (ay - by)) / d
            uy = ((ax**2 + ay**2) * (cx - bx) + (bx**2 + by**2) * (ax - cx) + (cx**2 + cy**2) * (bx - ax)) / d
        rad = np.hypot(ax - ux, ay - uy)
        line = ~np.isfinite(rad) | (rad > 8.0)
        ux, uy, rad = np.where(line, 0.0, ux), np.where(line, 0.0, uy), np.where(line, 0.0, rad)
        # distance of every point to every model, and its position along the model
        dist = np.abs(np.hypot(x[None] - ux[:, None], y[None] - uy[:, None]) - rad[:, None])
        pos = np.arctan2(y[None] - uy[:, None], x[None] - ux[:, None]) * rad[:, None]
        if line.any():
            lx, ly = cx[line] - ax[line], cy[line] - ay[line]
            norm = np.maximum(np.hypot(lx, ly), 1e-9)
            lx, ly = lx / norm, ly / norm
            rx, ry = x[None] - ax[line][:, None], y[None] - ay[line][:, None]
            dist[line] = np.abs(rx * ly[:, None] - ry * lx[:, None])
            pos[line] = rx * lx[:, None] + ry * ly[:, None]
        spread = np.minimum.reduce(
            [np.hypot(ax - bx, ay - by), np.hypot(bx - cx, by - cy), np.hypot(ax - cx, ay - cy)]
        )
        ok_model = ((rad >= 0.5) | line) & (spread >= 1.5 * geo.unit)  # three distinct, spread dies
        tol, gap = 0.8 * geo.unit, 2.5 * geo.unit
        best, best_n = None, 0.0
        for i in np.flatnonzero(ok_model):
            inl = np.flatnonzero(dist[i] <= tol)
            if inl.size < 4 or weight[inl].sum() <= best_n:
                continue
            order = inl[np.argsort(pos[i, inl])]
            breaks = np.flatnonzero(np.diff(pos[i, order]) > gap)
            for run in np.split(order, breaks + 1):
                extent = (pos[i, run[-1]] - pos[i, run[0]]) / geo.unit + 1.0
                # a streak fails most dies along it; a chain of background fails does not
                score = float(weight[run].sum())
                if score > best_n and run.size >= 4 and run.size / extent >= SCRATCH_MIN_LINEAR_DENSITY:
                    best, best_n = run, score
        if best is None:
            return self.take([])
        idx = pts[best]
        comps = [int(c) for c in np.unique(self.lab[idx]) if c in self.free]
        own = [c for c in comps if np.isin(self.dies([c]), idx).mean() >= 0.5]
        self.free -= set(own)
        self.claimed |= set(own)
        return np.sort(idx)

    def loc(self) -> np.ndarray:
        comps = [c for c in self.free if self.sizes[c] >= 2]
        if not comps:
            return self.take([])
        # thin clusters on the outermost dies are edge background, not a local blob
        best = max(comps, key=lambda c: self.links[c] * (0.2 if self.mean_r[c] >= 0.9 else 1.0))
        return self.take([best])

    def _centroid_r(self, c: int) -> float:
        d = self.dies([c])
        return math.hypot(self.geo.x[d].mean(), self.geo.y[d].mean())


def _free(sizes: np.ndarray) -> set[int]:
    """The components of at least 2 dies (``sizes`` by component label, 0 the background)."""
    return {int(c) for c in np.flatnonzero(sizes >= 2)}


def _big(free: set[int], sizes: np.ndarray, min_size: int) -> list[int]:
    """The structure components among ``free``, largest first (ties in the set's order)."""
    return sorted((c for c in free if sizes[c] >= min_size), key=lambda c: -sizes[c])


def _circular_mean(deg: np.ndarray) -> float:
    rad = np.radians(deg)
    return math.degrees(math.atan2(np.sin(rad).mean(), np.cos(rad).mean())) % 360.0


def _angdist(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


_SELECT = {
    "Near-full": _Claimer.whole,
    "Random": _Claimer.whole,
    "Edge-Ring": _Claimer.edge_ring,
    "Center": _Claimer.center,
    "Donut": _Claimer.donut,
    "Edge-Loc": _Claimer.edge_loc,
    "Scratch": _Claimer.scratch,
    "Loc": _Claimer.loc,
}


def min_component(n_dies: int) -> int:
    """Smallest component counted as structure (grows with the wafer's die count)."""
    return max(3, round(0.004 * n_dies))


def wafer_wide(geo: Geometry, on: np.ndarray, fail: np.ndarray, fail_fraction: float) -> str | None:
    """``full`` or ``scattered`` when the fails cover the whole wafer, else ``None`` (``on`` and
    ``fail``: the map's flat die masks): full above :data:`FULL_FRACTION`; scattered when at least
    10 of 12 sectors (3 radial bands x 4 quadrants) fail at a rate of 0.18 or more."""
    if fail_fraction >= FULL_FRACTION:
        return "full"
    if fail_fraction < 0.2:
        return None
    sector = geo.band_quadrant[on]
    n = np.bincount(sector, minlength=12)
    f = np.bincount(sector, weights=fail[on], minlength=12)
    rate = f / np.maximum(n, 1)
    dense = rate[n > 0]
    even = dense.size > 0 and dense.max() <= 2.0 * max(float(np.median(dense)), 1e-9)
    return "scattered" if even and int(((rate >= 0.18) | (n == 0)).sum()) >= 10 else None


def _mass_attributes(
    shape: dict[str, Any] | None, n_on: int, density: float, wide: str | None
) -> dict[str, Any]:
    """Attributes of a defect mass from its :func:`shapes_of` entry (``None``: no dies) and
    density; ``wide`` (the map's :func:`wafer_wide`, or ``None`` for a localised mass) overrides
    its distribution and zone."""
    if shape is None:
        return {"n_dies": 0, "area_fraction": 0.0, "zone": None, "clock": None, "distribution": None}
    s = shape
    s["density"] = density
    s["area_fraction"] = s["n_dies"] / max(n_on, 1)
    s["distribution"] = wide or distribution_of(s)
    s["zone"] = "whole" if wide else zone_of(s["mean_r"])
    s["clock"], s["clock_deg"] = None, None
    if s["centroid_r"] >= CLOCK_MIN_R:
        s["clock"], s["clock_deg"] = clock_of(s["centroid_x"], s["centroid_y"])
    return s


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, float | np.floating):
            out[k] = _r3(float(v))
        elif isinstance(v, np.integer):
            out[k] = int(v)
        elif isinstance(v, np.bool_):
            out[k] = bool(v)
        else:
            out[k] = v
    return out


def _stack_attributes(stack: np.ndarray) -> list[tuple[dict[str, Any], str | None]]:
    """The label-free attributes of each map of a stack ``(n, rows, cols)`` and its
    :func:`wafer_wide`. Components are labelled, counted and measured over the whole stack at
    once; only the main defect mass's shape is computed map by map."""
    n, rows, cols = stack.shape
    geo = geometry(rows, cols)
    on3, fail3 = stack != OFF, stack == FAIL
    on, fail = on3.reshape(n, -1), fail3.reshape(n, -1)
    n_on, n_fail = on.sum(1).tolist(), fail.sum(1).tolist()
    lab3, n_comp = ndimage.label(fail3, structure=_EIGHT_STACKED)  # numbered map by map, in scan order
    lab = lab3.reshape(n, -1)
    pix = np.flatnonzero(lab)
    comp, die = lab.ravel()[pix], pix % lab.shape[1]
    owner = np.zeros(n_comp + 1, dtype=np.int64)
    owner[comp] = pix // lab.shape[1]
    # each map's component labels: first[i] up to (not including) first[i + 1]
    first = (np.searchsorted(owner[1:], np.arange(n + 1)) + 1).tolist()
    sizes = np.bincount(comp, minlength=n_comp + 1)
    links = np.bincount(comp, weights=fail_neighbours(fail3).ravel()[pix], minlength=n_comp + 1)
    band = np.bincount(comp, weights=geo.r[die] >= EDGE_BAND_R, minlength=n_comp + 1) / np.maximum(sizes, 1)
    min_size = [min_component(k) for k in n_on]
    big = sizes >= np.asarray(min_size)[owner]
    big[0] = False
    n_big = np.bincount(owner[big], minlength=n).tolist()
    structured = np.bincount(owner[big], weights=sizes[big], minlength=n).tolist()
    fraction = [f / max(k, 1) for f, k in zip(n_fail, n_on, strict=True)]
    wide = [wafer_wide(geo, on[i], fail[i], fraction[i]) for i in range(n)]
    whole = np.array([w is not None for w in wide], dtype=bool)

    # an edge ring that covers at least half the circumference over a dense rim is the main mass
    ring = big & (band >= 0.6)
    occupied = np.zeros((n, int(geo.sector.max()) + 1), dtype=bool)
    on_ring = ring[comp]
    occupied[owner[comp[on_ring]], geo.sector[die[on_ring]]] = True
    outer = np.flatnonzero(geo.r >= 0.9)
    rim = on[:, outer] & occupied[:, geo.sector[outer]]
    rim_dies, rim_fails = rim.sum(1), (rim & fail[:, outer]).sum(1)
    rim_rate = np.divide(rim_fails, rim_dies, out=np.zeros(n), where=rim_dies > 0)
    ring_main = ~whole & (occupied.sum(1) * 15.0 >= 180) & (rim_rate >= 0.5)  # sparser rims: background
    # else the structure component with the most fail-neighbour links (ties: the larger; then the
    # order the claimer lists them in)
    cand = np.flatnonzero(big)
    ranked = cand[np.lexsort((-sizes[cand], -links[cand], owner[cand]))]
    heads = np.flatnonzero(np.diff(owner[ranked], prepend=-1))
    main_comp = ring & ring_main[owner]
    for h in heads.tolist():
        c = int(ranked[h])
        i = int(owner[c])
        if whole[i] or ring_main[i]:
            continue
        nxt = ranked[min(h + 1, ranked.size - 1)]
        if nxt != c and owner[nxt] == i and links[nxt] == links[c] and sizes[nxt] == sizes[c]:
            local = np.r_[0, np.arange(first[i], first[i + 1])]  # the map's own numbering
            loc_sizes, loc_links = sizes[local], links[local]
            c = int(local[max(_big(_free(loc_sizes), loc_sizes, min_size[i]), key=loc_links.__getitem__)])
        main_comp[c] = True
    masks = main_comp[lab]
    masks[whole] = fail[whole]

    has = np.flatnonzero(masks.any(1))
    masses = np.split(np.nonzero(masks[has])[1], np.cumsum(masks[has].sum(1))[:-1]) if has.size else []
    shapes = dict(zip(has.tolist(), shapes_of(geo, masses), strict=True))
    dens = dict(
        zip(has.tolist(), _densities(masks[has].reshape(-1, rows, cols), on3[has], fail3[has]), strict=True)
    )
    out = []
    for i in range(n):
        main = _mass_attributes(shapes.get(i), n_on[i], dens.get(i, 0.0), wide[i])
        a: dict[str, Any] = {
            "rows": rows,
            "cols": cols,
            "n_dies": n_on[i],
            "n_fail": n_fail[i],
            "yield": _r3(1.0 - fraction[i]),
            "fail_fraction": _r3(fraction[i]),
            "n_components": n_big[i],
            "structured_fraction": _r3(structured[i] / n_fail[i] if n_fail[i] else 0.0),
            "main": _clean(main),
        }
        a["inferred_pattern"] = infer_pattern(a)
        out.append((a, wide[i]))
    return out


def wafer_attributes_batch(maps: Sequence[np.ndarray]) -> list[dict[str, Any]]:
    """:func:`wafer_attributes` of each map without labels (the same dicts), for many maps at once:
    maps of one shape go through :func:`_stack_attributes` together, :data:`BATCH` at a time."""
    arrays = [np.asarray(m, dtype=np.uint8) for m in maps]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(a.shape, []).append(i)
    out: list[dict[str, Any]] = [{} for _ in arrays]
    for group in groups.values():
        for s in range(0, len(group), BATCH):
            part = group[s : s + BATCH]
            done = _stack_attributes(np.stack([arrays[i] for i in part]))
            for i, (a, _) in zip(part, done, strict=True):
                out[i] = {**a, "patterns": []}
    return out


def wafer_attributes(m: np.ndarray, labels: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """All attributes of one canonical map; ``labels`` (taxonomy names) guide the per-pattern
    separation. Returns a JSON-ready dict with wafer-level fields, ``main`` (the dominant defect
    mass, label-free), ``patterns`` (one entry a labelled pattern) and ``inferred_pattern``."""
    m = np.asarray(m, dtype=np.uint8)
    out, wide = _stack_attributes(m[None])[0]
    wanted = [c for c in labels if c != NONE]
    out["patterns"] = _patterns(m, wanted, wide) if wanted else []
    return out


def _patterns(m: np.ndarray, wanted: list[str], wide: str | None) -> list[dict[str, Any]]:
    """The defect mass of each wanted pattern of map ``m`` (claimed in :data:`CLAIM_ORDER`), in
    taxonomy order; ``wide`` is the map's :func:`wafer_wide`."""
    n_on = int((m != OFF).sum())
    fail_fraction = int((m == FAIL).sum()) / max(n_on, 1)
    cl = _Claimer(m, min_component(n_on))
    patterns = []
    for name in sorted(wanted, key=_claim_rank):
        idx = cl.core(_SELECT.get(name, _Claimer.loc)(cl), CORE_NEIGHBOURS.get(name, 0))
        shape, density = (shapes_of(cl.geo, [idx])[0], cl.density(idx)) if idx.size else (None, 0.0)
        a = _mass_attributes(shape, n_on, density, wide if name in WHOLE_WAFER else None)
        if name in WHOLE_WAFER and idx.size:
            a["zone"] = "whole"
            a["distribution"] = (
                a["distribution"]
                if a["distribution"] in ("full", "scattered")
                else ("full" if fail_fraction >= FULL_FRACTION else "scattered")
            )
        if name in SYMMETRIC:
            a["clock"], a["clock_deg"] = None, None
        a["class"] = name
        a["separable"] = bool(idx.size > 0)
        patterns.append(_clean(a))
    return sorted(patterns, key=lambda p: taxonomy.order_key(p["class"]))


def _claim_rank(name: str) -> tuple[int, str]:
    """:data:`CLAIM_ORDER`; a class it does not know (a configured taxonomy's own) claims last,
    as a local mass (the largest free component)."""
    return (CLAIM_ORDER.index(name), "") if name in CLAIM_ORDER else (len(CLAIM_ORDER), name)


def infer_pattern(attrs: dict[str, Any]) -> str:
    """A pattern name from the geometry alone (no label): a transparent rule cascade."""
    main = attrs["main"]
    ff = attrs["fail_fraction"] or 0.0
    if attrs["n_fail"] == 0 or main["n_dies"] == 0:
        return NONE
    dist = main["distribution"]
    if dist == "full":
        return "Near-full"
    if dist == "scattered":
        return "Random"
    if main["n_dies"] < max(4, 0.01 * attrs["n_dies"]) and ff < 0.2:
        return NONE
    if dist == "line":
        return "Scratch"
    if dist == "ring":
        return "Edge-Ring" if main["mean_r"] >= 0.72 else "Donut"
    if dist == "arc":
        return "Edge-Loc"
    if main["mean_r"] < 0.3 and (main["centroid_r"] or 0.0) < 0.2:
        return "Center"
    if main["mean_r"] >= 0.8:
        return "Edge-Loc"
    return "Loc"


def attributes_for_rows(df: pd.DataFrame, labels_col: str = "labels") -> list[dict[str, Any]]:
    """:func:`wafer_attributes` for every row of a raw-table-like frame."""
    out = []
    for blob, rows, cols, labels in zip(df["map"], df["rows"], df["cols"], df[labels_col], strict=True):
        out.append(wafer_attributes(decode_map(blob, rows, cols), list(labels)))
    return out


# --- agreement with the synthetic generator's ground truth ---


def truth_agreement(df: pd.DataFrame, attrs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row a true pattern of each synthetic wafer (one row with class ``none`` for a clean
    wafer): truth and estimate of zone, clock and distribution (the estimate of the same class;
    missing when the labels lacked it), and the label-free pattern type of single-class wafers."""
    rows = []
    for wid, pp, a in zip(df["wafer_id"], df["pattern_params"], attrs, strict=True):
        if not pp:
            continue
        truth = json.loads(pp)["patterns"]
        est = {p["class"]: p for p in a["patterns"]}
        single = len(truth) <= 1
        for t in truth or [{"class": NONE}]:
            e = est.get(t["class"], {})
            row = {"wafer_id": wid, "class": t["class"], "mixed": not single, "n_true": t.get("n_dies", 0)}
            for attr in ("zone", "clock", "distribution"):
                row[f"{attr}_true"] = t.get(attr, "n/a")
                row[f"{attr}_est"] = e.get(attr, "n/a" if t["class"] == NONE else None)
            row["pattern_true"] = t["class"] if single else None
            row["pattern_est"] = a["inferred_pattern"] if single else None
            rows.append(row)
    return pd.DataFrame(rows, dtype=object)


def agreement_summary(table: pd.DataFrame, min_dies: int = 0) -> dict[str, float]:
    """Share of true patterns whose estimate agrees, per attribute (``pattern_type`` over
    single-class wafers, ``none`` included); ``min_dies`` keeps only patterns that failed at
    least that many dies (smaller ones drown in the background)."""
    if table.empty:
        return {}
    out = {}
    pat = table[(table["class"] != NONE) & (table["n_true"] >= min_dies)]
    for attr in ("zone", "clock", "distribution"):
        same = [e == t for e, t in zip(pat[f"{attr}_est"], pat[f"{attr}_true"], strict=True)]
        out["clock_position" if attr == "clock" else attr] = float(np.mean(same)) if same else float("nan")
    single = table[table["pattern_true"].notna()]
    if len(single):
        out["pattern_type"] = float((single["pattern_est"] == single["pattern_true"]).mean())
    return out

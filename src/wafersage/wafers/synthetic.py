"""The synthetic wafer-map generator: the pipeline's embedded default data source.

Each wafer is a round die grid (``rows`` x ``cols``, 0 off-wafer / 1 pass / 2 fail) with random
background failures at a realistic yield, extra failures on the outermost die ring, and zero to
four defect patterns drawn from physically plausible parameters. The generator knows the ground
truth, and writes it with every map (``true_labels``, ``noise_flipped``, ``pattern_params``).

Geometry (shared with every later stage that computes attributes analytically):

- Die ``(i, j)`` has normalised coordinates ``x = (j + 0.5 - cols/2) / (cols/2)`` (right
  positive) and ``y = (i + 0.5 - rows/2) / (rows/2)`` (down positive, row 0 is the top), and
  normalised radius ``r = hypot(x, y)``; a die is on-wafer when ``r <= 1 - edge_exclusion``.
- Clock position: the angle of a point measured clockwise from 12 o'clock (up),
  ``deg = atan2(x, -y) mod 360``; ``clock = round(deg / 30) mod 12``, with 0 written as 12.
- A pattern's *defect mass* is the set of dies the pattern itself failed (before the background
  is added). Its ``mean_r`` is their mean normalised radius and its ``centroid`` their mean
  ``(x, y)``.
- ``zone``: ``"whole"`` for the wafer-wide classes (:data:`WHOLE_WAFER`); otherwise by ``mean_r``:
  ``center`` below :data:`ZONE_CENTER_MAX`, ``inner`` below :data:`ZONE_INNER_MAX`, ``middle``
  below :data:`ZONE_MIDDLE_MAX`, ``edge`` from there on.
- ``clock``: null for the rotationally symmetric classes (:data:`SYMMETRIC`), and null when the
  centroid lies within :data:`CLOCK_MIN_R` of the wafer centre; otherwise the clock position of
  the centroid (``clock_deg`` gives the angle itself).
- ``distribution``: fixed per class (:data:`DISTRIBUTION`): clustered, scattered, ring, arc,
  line or full.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wafersage.atomic import atomic_path
from wafersage.errors import WaferSageError
from wafersage.wafers.encoding import FAIL, OFF, PASS
from wafersage.wafers.rawtable import COLUMNS, SCHEMA, check_table, new_table, params_json
from wafersage.wafers.taxonomy import NONE, WM811K_CLASSES, confusable_with

#: The generator draws WM-811K's nine classes (an active taxonomy must include them: ingest checks).
CLASSES: tuple[str, ...] = WM811K_CLASSES
CLASS_INDEX: dict[str, int] = {c: i for i, c in enumerate(CLASSES)}
PATTERNS: tuple[str, ...] = CLASSES[1:]

SOURCE = "synthetic"
LOT_SIZE = 25

#: Zone thresholds on the defect mass's mean normalised radius.
ZONE_CENTER_MAX, ZONE_INNER_MAX, ZONE_MIDDLE_MAX = 0.3, 0.55, 0.8
#: A centroid closer than this to the centre has no clock position.
CLOCK_MIN_R = 0.15
#: Classes whose defect covers the whole wafer (zone ``whole``).
WHOLE_WAFER = frozenset({"Near-full", "Random"})
#: Rotationally symmetric classes (clock null).
SYMMETRIC = frozenset({"Center", "Donut", "Edge-Ring", "Near-full", "Random"})
#: The spatial distribution of each class.
DISTRIBUTION: dict[str, str] = {
    "Center": "clustered",
    "Donut": "ring",
    "Edge-Loc": "arc",
    "Edge-Ring": "ring",
    "Loc": "clustered",
    "Near-full": "full",
    "Random": "scattered",
    "Scratch": "line",
}

#: Default single-class mix: mildly imbalanced, every class well represented.
DEFAULT_CLASS_MIX: dict[str, float] = {
    NONE: 0.20,
    "Center": 0.11,
    "Donut": 0.09,
    "Edge-Loc": 0.12,
    "Edge-Ring": 0.12,
    "Loc": 0.12,
    "Near-full": 0.06,
    "Random": 0.07,
    "Scratch": 0.11,
}
#: Named class-mix presets; ``wm811k`` is WM-811K's own labelled counts (172,950 labelled maps).
CLASS_MIX_PRESETS: dict[str, dict[str, float]] = {
    "default": DEFAULT_CLASS_MIX,
    "uniform": {c: 1.0 for c in CLASSES},
    "wm811k": {
        NONE: 147431,
        "Center": 4294,
        "Donut": 555,
        "Edge-Loc": 5189,
        "Edge-Ring": 9680,
        "Loc": 3593,
        "Near-full": 149,
        "Random": 866,
        "Scratch": 1193,
    },
}

#: MixedWM38's 29 multi-pattern combinations (Center never with Donut, Edge-Loc never with
#: Edge-Ring, Near-full and Random never mixed).
MIXED_COMBOS: tuple[tuple[str, ...], ...] = (
    ("Center", "Edge-Loc"),
    ("Center", "Edge-Ring"),
    ("Center", "Loc"),
    ("Center", "Scratch"),
    ("Donut", "Edge-Loc"),
    ("Donut", "Edge-Ring"),
    ("Donut", "Loc"),
    ("Donut", "Scratch"),
    ("Edge-Loc", "Loc"),
    ("Edge-Loc", "Scratch"),
    ("Edge-Ring", "Loc"),
    ("Edge-Ring", "Scratch"),
    ("Loc", "Scratch"),
    ("Center", "Edge-Loc", "Loc"),
    ("Center", "Edge-Loc", "Scratch"),
    ("Center", "Edge-Ring", "Loc"),
    ("Center", "Edge-Ring", "Scratch"),
    ("Center", "Loc", "Scratch"),
    ("Donut", "Edge-Loc", "Loc"),
    ("Donut", "Edge-Loc", "Scratch"),
    ("Donut", "Edge-Ring", "Loc"),
    ("Donut", "Edge-Ring", "Scratch"),
    ("Donut", "Loc", "Scratch"),
    ("Edge-Loc", "Loc", "Scratch"),
    ("Edge-Ring", "Loc", "Scratch"),
    ("Center", "Edge-Loc", "Loc", "Scratch"),
    ("Center", "Edge-Ring", "Loc", "Scratch"),
    ("Donut", "Edge-Loc", "Loc", "Scratch"),
    ("Donut", "Edge-Ring", "Loc", "Scratch"),
)

#: Background fail-rate multiplier per class (a mixed map takes the smallest): WM-811K's maps with
#: an edge ring or a scratch have far fewer random fails than the rest (the median mid-radius fail
#: rate of the labelled maps, relative to ``none``).
BACKGROUND_SCALE: dict[str, float] = {
    NONE: 1.0,
    "Center": 1.25,
    "Donut": 1.0,
    "Edge-Loc": 0.75,
    "Edge-Ring": 0.45,
    "Loc": 0.95,
    "Near-full": 1.0,
    "Random": 1.0,
    "Scratch": 0.55,
}

#: Die-grid size multiplier per class (a mixed map takes the largest): WM-811K's classes come from
#: different products, e.g. median grid side 26 for ``none``/Center, 35 for Loc/Edge-Loc, 41 for
#: Scratch/Donut, 53 for Edge-Ring (train_29 split), against the default ``size_median`` 29.
CLASS_SIZE_SCALE: dict[str, float] = {
    NONE: 0.9,
    "Center": 0.9,
    "Donut": 1.4,
    "Edge-Loc": 1.2,
    "Edge-Ring": 1.8,
    "Loc": 1.2,
    "Near-full": 1.15,
    "Random": 1.2,
    "Scratch": 1.4,
}
#: Grid side at which the drawn background rates apply as drawn. On larger grids (smaller dies)
#: the random and centre fail rates fall with die area, ``(ref / side) ** 2``, and the edge rate
#: with die pitch, ``ref / side`` (WM-811K ``none`` maps: median fail fraction 0.165 at side <28,
#: 0.056 at 40-60, 0.027 above 60). Never raised above the drawn rate on smaller grids.
BACKGROUND_REF_SIDE = 26.0

#: Share of noisy single-pattern labels that become ``none`` (the rest: a confusable class).
NOISE_TO_NONE = 0.2


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the generator (``params.yaml`` section ``synthetic``)."""

    n_wafers: int = 2000
    seed: int = 0
    #: Single-pattern class weights (normalised), or a preset name from :data:`CLASS_MIX_PRESETS`.
    class_mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CLASS_MIX))
    #: Share of maps carrying 2-4 patterns (drawn uniformly from :data:`MIXED_COMBOS`).
    mixed_fraction: float = 0.1
    #: Share of maps whose observed labels differ from the truth.
    noise_rate: float = 0.1
    #: Die-grid rows: log-normal around ``size_median`` (log-sd ``size_sigma``), clipped.
    size_min: int = 20
    size_max: int = 80
    size_median: float = 29.0
    size_sigma: float = 0.4
    #: Log-sd of the cols/rows aspect ratio (die aspect).
    aspect_sigma: float = 0.07
    #: Background yield, drawn per wafer (Beta(2, 2) scaled to the range).
    yield_range: tuple[float, float] = (0.78, 0.99)
    #: Extra failure probability at the wafer edge (outermost die, decaying inwards over about
    #: one die), drawn per wafer.
    edge_fail_range: tuple[float, float] = (0.0, 0.4)
    #: Extra failure probability at the wafer centre (Gaussian, sd 0.12 radius), drawn per wafer.
    center_fail_range: tuple[float, float] = (0.0, 0.25)
    #: Fraction of the normalised radius excluded at the wafer edge.
    edge_exclusion: float = 0.01

    def __post_init__(self) -> None:
        mix = self.class_mix
        if isinstance(mix, str):
            if mix not in CLASS_MIX_PRESETS:
                raise WaferSageError("params.yaml", "unknown class_mix preset", mix)
            object.__setattr__(self, "class_mix", dict(CLASS_MIX_PRESETS[mix]))
        for name, w in self.class_mix.items():
            if name not in CLASS_INDEX:
                raise WaferSageError("params.yaml", "unknown class in synthetic.class_mix", repr(name))
            if not (float(w) >= 0):
                raise WaferSageError("params.yaml", "class_mix weights must be >= 0", f"{name}: {w}")
        if sum(float(w) for w in self.class_mix.values()) <= 0:
            raise WaferSageError("params.yaml", "class_mix weights sum to zero")
        checks = [
            (self.n_wafers >= 0, "n_wafers must be >= 0"),
            (0.0 <= self.mixed_fraction <= 1.0, "mixed_fraction must be in [0, 1]"),
            (0.0 <= self.noise_rate <= 1.0, "noise_rate must be in [0, 1]"),
            (8 <= self.size_min <= self.size_max <= 512, "need 8 <= size_min <= size_max <= 512"),
            (0.0 < self.yield_range[0] <= self.yield_range[1] <= 1.0, "yield_range must be in (0, 1]"),
            (0.0 <= self.edge_fail_range[0] <= self.edge_fail_range[1] <= 1.0, "bad edge_fail_range"),
            (0.0 <= self.center_fail_range[0] <= self.center_fail_range[1] <= 1.0, "bad center_fail_range"),
            (0.0 <= self.edge_exclusion < 0.2, "edge_exclusion must be in [0, 0.2)"),
        ]
        for ok, rule in checks:
            if not ok:
                raise WaferSageError("params.yaml", f"synthetic.{rule}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SyntheticConfig:
        """Build from a params.yaml section; unknown keys raise ``WaferSageError``."""
        names = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {}
        for key, value in (d or {}).items():
            if key not in names:
                raise WaferSageError("params.yaml", "unknown synthetic parameter", key)
            if key in ("yield_range", "edge_fail_range", "center_fail_range"):
                value = (float(value[0]), float(value[1]))
            elif key == "class_mix" and isinstance(value, dict):
                value = {str(k): float(v) for k, v in value.items()}
            kw[key] = value
        return cls(**kw)

    def class_probs(self) -> np.ndarray:
        """Normalised single-pattern class probabilities in taxonomy order."""
        w = np.array([float(self.class_mix.get(c, 0.0)) for c in CLASSES])
        return w / w.sum()


@dataclass(frozen=True)
class _Grid:
    rows: int
    cols: int
    on: np.ndarray  # bool (rows, cols)
    idx: np.ndarray  # flat indices of on-wafer dies
    x: np.ndarray  # per on-wafer die
    y: np.ndarray
    r: np.ndarray
    theta: np.ndarray  # radians clockwise from 12 o'clock, [0, 2pi)
    rim: np.ndarray  # bool: outermost die ring (an off-wafer 4-neighbour)
    unit: float  # one die pitch in normalised units
    edge_decay: np.ndarray  # 1 on the rim, decaying inwards by die
    center_decay: np.ndarray  # Gaussian bump at the centre


@lru_cache(maxsize=4096)
def _grid(rows: int, cols: int, edge_exclusion: float) -> _Grid:
    y1 = (np.arange(rows) + 0.5 - rows / 2) / (rows / 2)
    x1 = (np.arange(cols) + 0.5 - cols / 2) / (cols / 2)
    yy, xx = np.meshgrid(y1, x1, indexing="ij")
    rr = np.hypot(xx, yy)
    on = rr <= 1.0 - edge_exclusion
    pad = np.pad(on, 1)
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    idx = np.flatnonzero(on)
    x, y = xx.ravel()[idx], yy.ravel()[idx]
    theta = np.mod(np.arctan2(x, -y), 2 * np.pi)
    r, rim = rr.ravel()[idx], ~inner.ravel()[idx]
    unit = 2.0 / max(rows, cols)
    depth = np.maximum((1.0 - edge_exclusion - r) / unit - 0.5, 0.0)
    edge_decay = np.where(rim, 1.0, np.exp(-depth))
    center_decay = np.exp(-0.5 * (r / 0.12) ** 2)
    arrays = (on, idx, x, y, r, theta, rim)
    for a in (*arrays, edge_decay, center_decay):
        a.setflags(write=False)
    return _Grid(rows, cols, *arrays, unit=unit, edge_decay=edge_decay, center_decay=center_decay)


def _angdiff(a: np.ndarray, b: float) -> np.ndarray:
    """Absolute angular distance in radians, in [0, pi]."""
    d = np.mod(a - b + np.pi, 2 * np.pi) - np.pi
    return np.abs(d)


def _r4(v: float) -> float:
    return round(float(v), 4)


# --- the eight patterns: each returns a per-die failure probability and its physical params ---


def _center(rng: np.random.Generator, g: _Grid) -> tuple[np.ndarray, dict[str, Any]]:
    cx, cy = rng.normal(0.0, 0.05, 2)
    radius = max(rng.uniform(0.14, 0.45), 1.6 * g.unit)
    dens = rng.uniform(0.7, 0.98)
    q = np.hypot(g.x - cx, g.y - cy) / radius
    p = np.where(q <= 1.0, dens * (1.0 - 0.35 * q * q), 0.0)
    return p, {"center_x": _r4(cx), "center_y": _r4(cy), "radius": _r4(radius), "density": _r4(dens)}


def _donut(rng: np.random.Generator, g: _Grid) -> tuple[np.ndarray, dict[str, Any]]:
    r_in = rng.uniform(0.15, 0.4)
    width = max(rng.uniform(0.1, 0.3), 1.5 * g.unit)  # WM-811K donuts: thin, often broken rings
    dens = rng.uniform(0.55, 0.95)
    coverage = 1.0 if rng.random() < 0.4 else rng.uniform(0.5, 1.0)
    gap_at = rng.uniform(0, 2 * np.pi)
    mid = r_in + width / 2
    q = np.abs(g.r - mid) / (width / 2)
    p = np.where(q <= 1.0, dens * (1.0 - 0.3 * q * q), 0.0)
    if coverage < 1.0:
        p = np.where(_angdiff(g.theta, gap_at) < np.pi * (1.0 - coverage), 0.0, p)
    params = {"inner_radius": _r4(r_in), "ring_width": _r4(width), "density": _r4(dens)}
    params["coverage"] = _r4(coverage)
    return p, params


def _edge_ring(rng: np.random.Generator, g: _Grid) -> tuple[np.ndarray, dict[str, Any]]:
    width = max(rng.uniform(0.03, 0.14), 0.9 * g.unit)
    dens = rng.uniform(0.6, 1.0)
    coverage = 1.0 if rng.random() < 0.4 else rng.uniform(0.55, 1.0)
    gap_at = rng.uniform(0, 2 * np.pi)
    band = (g.r >= 1.0 - width) | g.rim
    p = np.where(band, dens, 0.0)
    if coverage < 1.0:
        p = np.where(_angdiff(g.theta, gap_at) < np.pi * (1.0 - coverage), 0.0, p)
    return p, {"ring_width": _r4(width), "density": _r4(dens), "coverage": _r4(coverage)}


def _edge_loc(rng: np.random.Generator, g: _Grid) -> tuple[np.ndarray, dict[str, Any]]:
    at = rng.uniform(0, 2 * np.pi)
    arc = rng.uniform(25.0, 110.0)  # degrees
    depth = max(rng.uniform(0.08, 0.32), 1.2 * g.unit)
    dens = rng.uniform(0.55, 0.97)
    half = math.radians(arc) / 2
    t = np.clip(_angdiff(g.theta, at) / half, 0.0, 1.0)
    inner = 1.0 - depth * np.sqrt(1.0 - t * t)
    p = np.where(((g.r >= inner) & (t < 1.0)) | ((t < 0.5) & g.rim), dens, 0.0)
    params = {"arc_center_deg": _r4(math.degrees(at)), "arc_length_deg": _r4(arc), "depth": _r4(depth)}
    params["density"] = _r4(dens)
    return p, params


def _loc(rng: np.random.Generator, g: _Grid) -> tuple[np.ndarray, dict[str, Any]]:
    rc = rng.uniform(0.2, 0.85)  # WM-811K Loc clusters sit mostly in the outer half
    at = rng.uniform(0, 2 * np.pi)
    cx, cy = rc * math.sin(at), -rc * math.cos(at)
    a = max(rng.uniform(0.08, 0.28), 1.5 * g.unit)
    b = max(a * rng.uniform(0.45, 1.0), 1.2 * g.unit)
    orient = rng.uniform(0, np.pi)
    dens = rng.uniform(0.75, 1.0)  # WM-811K Loc clusters are compact and nearly solid
    dx, dy = g.x - cx, g.y - cy
    c, s = math.cos(orient), math.sin(orient)
    q = ((dx * c + dy * s) / a) ** 2 + ((-dx * s + dy * c) / b) ** 2
    p = np.where(q <= 1.0, dens * (1.0 - 0.35 * q), 0.0)
    params = {"center_x": _r4(cx), "center_y": _r4(cy), "semi_major": _r4(a), "semi_minor": _r4(b)}
    params.update({"orientation_deg": _r4(math.degrees(orient)), "density": _r4(dens)})
    return p, params


def _near_full(rng: np.random.Generator, g: _Grid) -> tuple[np.ndarray, dict[str, Any]]:
    dens = rng.uniform(0.82, 0.995)
    return np.full(g.r.shape, dens), {"density": _r4(dens)}


def _random(rng: np.random.Generator, g: _Grid) -> tuple[np.ndarray, dict[str, Any]]:
    dens = rng.uniform(0.3, 0.62)
    tilt = rng.uniform(-0.15, 0.05)  # mild radial gradient
    return np.clip(dens + tilt * (g.r - 0.5), 0.0, 1.0), {"density": _r4(dens), "radial_tilt": _r4(tilt)}


def _scratch(rng: np.random.Generator, g: _Grid) -> tuple[np.ndarray, dict[str, Any]]:
    rm = math.sqrt(rng.random()) * 0.85
    at = rng.uniform(0, 2 * np.pi)
    mx, my = rm * math.sin(at), -rm * math.cos(at)
    angle = rng.uniform(0, np.pi)  # direction of the chord, image coordinates
    length = rng.uniform(0.5, 1.8)
    curv = 0.0 if rng.random() < 0.35 else rng.uniform(-1.5, 1.5)
    thick = rng.uniform(0.5, 0.8) * g.unit  # WM-811K scratches are mostly continuous 1-die lines
    dens = rng.uniform(0.8, 1.0)
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = g.x - mx, g.y - my
    u = dx * c + dy * s
    v = -dx * s + dy * c
    dist = np.abs(v - 0.5 * curv * u * u) / np.sqrt(1.0 + (curv * u) ** 2)
    p = np.where((np.abs(u) <= length / 2) & (dist <= thick), dens, 0.0)
    params = {"mid_x": _r4(mx), "mid_y": _r4(my), "angle_deg": _r4(math.degrees(angle))}
    params.update({"length": _r4(length), "curvature": _r4(curv), "thickness": _r4(thick)})
    params["density"] = _r4(dens)
    return p, params


_PATTERN_FNS = {
    "Center": _center,
    "Donut": _donut,
    "Edge-Loc": _edge_loc,
    "Edge-Ring": _edge_ring,
    "Loc": _loc,
    "Near-full": _near_full,
    "Random": _random,
    "Scratch": _scratch,
}


def zone_of(mean_r: float) -> str:
    """The zone of a localised defect mass from its mean normalised radius."""
    if mean_r < ZONE_CENTER_MAX:
        return "center"
    if mean_r < ZONE_INNER_MAX:
        return "inner"
    if mean_r < ZONE_MIDDLE_MAX:
        return "middle"
    return "edge"


def clock_of(x: float, y: float) -> tuple[int, float]:
    """Clock position (1-12) and angle in degrees clockwise from 12 o'clock of point ``(x, y)``."""
    deg = math.degrees(math.atan2(x, -y)) % 360.0
    hour = round(deg / 30.0) % 12
    return (12 if hour == 0 else hour), deg


def _ground_truth(name: str, g: _Grid, mask: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Zone, clock and distribution of one pattern from its own failed dies."""
    sel = mask if mask.any() else p > 0
    if not sel.any():
        sel = np.ones_like(mask)
    mean_r = _r4(g.r[sel].mean())  # rounded first, so zone_of(mean_r) reproduces the zone
    cx, cy = float(g.x[sel].mean()), float(g.y[sel].mean())
    cr = math.hypot(cx, cy)
    clock: int | None = None
    clock_deg: float | None = None
    if name not in SYMMETRIC and cr >= CLOCK_MIN_R:
        clock, clock_deg = clock_of(cx, cy)
    return {
        "class": name,
        "zone": "whole" if name in WHOLE_WAFER else zone_of(mean_r),
        "clock": clock,
        "clock_deg": None if clock_deg is None else _r4(clock_deg),
        "distribution": DISTRIBUTION[name],
        "n_dies": int(mask.sum()),
        "mean_r": mean_r,
        "centroid_x": _r4(cx),
        "centroid_y": _r4(cy),
        "centroid_r": _r4(cr),
    }


def _draw_size(rng: np.random.Generator, cfg: SyntheticConfig, scale: float = 1.0) -> tuple[int, int]:
    median = cfg.size_median * scale
    rows = int(round(median * math.exp(cfg.size_sigma * rng.standard_normal())))
    rows = min(max(rows, cfg.size_min), cfg.size_max)
    aspect = math.exp(cfg.aspect_sigma * rng.standard_normal())
    cols = min(max(int(round(rows * aspect)), cfg.size_min), cfg.size_max)
    return rows, cols


def _noisy(rng: np.random.Generator, true: list[str]) -> list[str]:
    """Observed labels that differ from ``true`` along the confusion structure."""
    if true == [NONE]:
        weights = np.array([3.0 if len(confusable_with(c)) > 1 else 1.0 for c in PATTERNS])
        return [PATTERNS[int(rng.choice(len(PATTERNS), p=weights / weights.sum()))]]
    k = int(rng.integers(len(true)))
    target = true[k]
    alts = [c for c in confusable_with(target) if c not in true]
    if len(true) > 1 and (not alts or rng.random() < 0.5):
        out = true[:k] + true[k + 1 :]  # a mixed map missing one of its patterns
    elif alts and (len(true) > 1 or rng.random() >= NOISE_TO_NONE):
        out = true[:k] + [alts[int(rng.integers(len(alts)))]] + true[k + 1 :]
    else:
        return [NONE]
    return sorted(set(out), key=CLASS_INDEX.__getitem__)


def generate_one(cfg: SyntheticConfig, i: int) -> dict[str, Any]:
    """Wafer ``i`` of the data set ``cfg`` describes (independent of ``n_wafers``)."""
    rng = np.random.default_rng([int(cfg.seed), int(i)])
    if rng.random() < cfg.mixed_fraction:
        true = list(MIXED_COMBOS[int(rng.integers(len(MIXED_COMBOS)))])
    else:
        true = [CLASSES[int(rng.choice(len(CLASSES), p=_probs(cfg)))]]
    rows, cols = _draw_size(rng, cfg, max(CLASS_SIZE_SCALE[c] for c in true))
    g = _grid(rows, cols, float(cfg.edge_exclusion))
    n = g.r.size

    pitch = min(1.0, BACKGROUND_REF_SIDE / math.sqrt(rows * cols))
    ylo, yhi = cfg.yield_range
    bg = (1.0 - (ylo + (yhi - ylo) * rng.beta(2.0, 2.0))) * min(BACKGROUND_SCALE[c] for c in true)
    bg *= pitch * pitch
    edge = rng.uniform(*cfg.edge_fail_range) * pitch
    center = rng.uniform(*cfg.center_fail_range) * pitch * pitch
    fail = rng.random(n) < bg + edge * g.edge_decay + center * g.center_decay

    patterns = []
    for name in true:
        if name == NONE:
            continue
        p, phys = _PATTERN_FNS[name](rng, g)
        mask = rng.random(n) < p
        fail |= mask
        gt = _ground_truth(name, g, mask, p)
        gt.update(phys)
        patterns.append(gt)

    grid = np.zeros(rows * cols, dtype=np.uint8)
    grid[g.idx] = np.where(fail, FAIL, PASS).astype(np.uint8)
    assert OFF == 0  # the zero-initialised grid is off-wafer
    labels = _noisy(rng, true) if rng.random() < cfg.noise_rate else list(true)
    params = {
        "patterns": patterns,
        "background": {"fail_rate": _r4(bg), "edge_fail": _r4(edge), "center_fail": _r4(center)},
        "mixed": len(true) > 1,
    }
    return {
        "rows": rows,
        "cols": cols,
        "map": grid.tobytes(),
        "labels": labels,
        "true_labels": true,
        "noise_flipped": labels != true,
        "pattern_params": params_json(params),
    }


@lru_cache(maxsize=64)
def _probs_of(mix: tuple[tuple[str, float], ...]) -> np.ndarray:
    w = np.array([dict(mix).get(c, 0.0) for c in CLASSES], dtype=float)
    return w / w.sum()


def _probs(cfg: SyntheticConfig) -> np.ndarray:
    return _probs_of(tuple(sorted((k, float(v)) for k, v in cfg.class_mix.items())))


def generate_range(cfg: SyntheticConfig, start: int, stop: int) -> pd.DataFrame:
    """Rows ``start:stop`` of :func:`generate` (same ids, lots and maps), for chunked writing."""
    stop = min(stop, cfg.n_wafers)
    start = min(max(start, 0), stop)
    width = max(6, len(str(max(cfg.n_wafers - 1, 0))))
    recs = [generate_one(cfg, i) for i in range(start, stop)]
    cols: dict[str, list] = {
        "wafer_id": [f"syn-{i:0{width}d}" for i in range(start, stop)],
        "source": [SOURCE] * len(recs),
        "lot_id": [f"lot-{i // LOT_SIZE:04d}" for i in range(start, stop)],
    }
    for key in ("rows", "cols", "map", "labels", "true_labels", "noise_flipped", "pattern_params"):
        cols[key] = [r[key] for r in recs]
    return new_table(cols)


def generate(cfg: SyntheticConfig) -> pd.DataFrame:
    """The raw table of ``cfg.n_wafers`` synthetic wafers (seeded, byte-for-byte deterministic)."""
    return generate_range(cfg, 0, cfg.n_wafers)


def _arrow_chunk(cfg: SyntheticConfig, start: int, stop: int) -> Any:
    """Wafers ``start:stop`` as a checked Arrow table in the raw schema (runs in a worker)."""
    import pyarrow as pa

    df = generate_range(cfg, start, stop)
    check_table(df, "<synthetic>")
    return pa.Table.from_pandas(df[list(COLUMNS)], schema=SCHEMA, preserve_index=False)


def write_parquet_chunked(
    cfg: SyntheticConfig,
    path: str | Path,
    chunk: int = 50_000,
    workers: int = 1,
    timings: dict[str, float] | None = None,
) -> int:
    """Generate and write ``cfg.n_wafers`` wafers to Parquet ``chunk`` rows at a time (one row group
    each, in order), generating in ``workers`` processes while the parent writes; returns the
    number of rows written. ``timings``, when given, receives the wall seconds of the whole run
    (``total_s``) and the seconds the writer waited for chunks (``wait_s``).

    Every wafer has its own seed, so the output does not depend on ``chunk`` or ``workers``: it
    reads back (``rawtable.read_raw``) equal to ``write_raw(generate(cfg))``; the file bytes differ
    only in row-group layout (``write_raw`` writes up to 1Mi rows per group). Written atomically.
    """
    from concurrent.futures import ProcessPoolExecutor

    import pyarrow.parquet as pq

    if cfg.n_wafers <= 0:
        raise WaferSageError(path, "no wafers", "synthetic.n_wafers must be > 0")
    if chunk <= 0 or workers <= 0:
        raise WaferSageError(path, "chunk and workers must be > 0", f"{chunk}, {workers}")
    starts = list(range(0, cfg.n_wafers, chunk))
    stops = [min(s + chunk, cfg.n_wafers) for s in starts]
    t0, wait = time.perf_counter(), 0.0
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, SCHEMA, compression="zstd") as writer:
        if workers == 1:
            tables = (_arrow_chunk(cfg, a, b) for a, b in zip(starts, stops, strict=True))
            for table in tables:
                writer.write_table(table)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(_arrow_chunk, cfg, a, b) for a, b in zip(starts, stops, strict=True)]
                for fut in futures:
                    tw = time.perf_counter()
                    table = fut.result()
                    wait += time.perf_counter() - tw
                    writer.write_table(table)
    if timings is not None:
        timings.update(total_s=time.perf_counter() - t0, wait_s=wait)
    return cfg.n_wafers

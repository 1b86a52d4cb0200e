"""Procedural street scenes with exact labels: the training data for the video algorithms, made here, offline.

There are no camera frames to train on (and no network to fetch a data set), so frames are drawn: a street with
buildings, road and pavement, seen by a camera at some height, with riders, pedestrians, cars, bins, litter and
stalls placed by a pinhole ground-plane model (an object of height h whose foot is y pixels below the horizon is
``y * h / camera_height`` pixels tall). Each labelled object is also drawn into an instance map, so that occlusion by
nearer objects gives the visible box and drops objects that are mostly hidden.

Everything that makes frames hard is a range in :class:`SceneSettings`: lighting (day, dusk, night), camera height
and tilt (horizon), blur, noise, JPEG quality, occluders, clutter. ``SHIFTED`` uses palettes, lighting and camera
heights that ``TRAIN`` never produces: it measures how the models degrade on streets they were not trained on.

Speed matters (the stream simulator draws live frames): everything is PIL drawing primitives and per-channel lookup
tables in C; no per-pixel Python. One core draws well over 50 frames of 320x320 per second.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from ml.algorithms import get_algorithm

# Bump when drawing changes in a way that makes earlier data sets differ from what this code would generate.
GENERATOR_VERSION = 3

Color = tuple[int, int, int]
Box = tuple[float, float, float, float]

# --------------------------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SceneSettings:
    """The ranges a frame is drawn from. Sizes in pixels are for a 360-pixel-high frame and scale with the height."""

    name: str
    palettes: tuple[str, ...]
    lighting: tuple[str, ...]
    camera_height_m: tuple[float, float]
    horizon: tuple[float, float]  # horizon row as a fraction of the height: the camera's tilt
    min_object_px: float  # smallest labelled object (its larger side) on a 360-high frame
    max_object_px: float
    blur_probability: float
    blur_radius: tuple[float, float]
    noise: tuple[float, float]  # standard deviation of the sensor noise, 0..255
    jpeg_quality: tuple[int, int]
    pole_count: tuple[int, int]  # lamp posts and tree trunks: thin occluders
    clutter: float  # scales the number of unlabelled distractors
    empty_probability: float  # frames with no labelled object at all
    helmet_share: float = 0.5  # helmet: share of riders wearing one
    cap_share: float = 0.0  # helmet: share of bare-headed riders in a cloth cap (looks like a helmet at 320 px)
    dark_helmet_share: float = 0.0  # helmet: share of helmets that are black or dark (look like hair at 320 px)

    def to_dict(self) -> dict:
        """Plain data for the dataset's info block (so a data set says how it was made)."""
        return asdict(self)


TRAIN = SceneSettings(
    name="train",
    palettes=("city", "old_town", "new_district"),
    lighting=("day", "day", "overcast", "dusk", "night"),
    camera_height_m=(3.0, 6.0),
    horizon=(0.22, 0.42),
    min_object_px=48.0,
    max_object_px=180.0,
    blur_probability=0.3,
    blur_radius=(0.4, 1.3),
    noise=(2.0, 9.0),
    jpeg_quality=(45, 92),
    pole_count=(0, 3),
    clutter=1.0,
    empty_probability=0.05,
)

# Nothing here overlaps TRAIN: other palettes, lighting outside the trained range, a camera twice as high.
SHIFTED = SceneSettings(
    name="shifted",
    palettes=("snow", "desert_dust", "neon"),
    lighting=("deep_night", "overexposed", "fog"),
    camera_height_m=(7.5, 10.0),
    horizon=(0.12, 0.22),
    min_object_px=30.0,
    max_object_px=120.0,
    blur_probability=0.5,
    blur_radius=(0.8, 1.8),
    noise=(6.0, 14.0),
    jpeg_quality=(30, 60),
    pole_count=(1, 4),
    clutter=1.5,
    empty_probability=0.05,
    cap_share=0.15,
    dark_helmet_share=0.3,
)

SETTINGS: dict[str, SceneSettings] = {TRAIN.name: TRAIN, SHIFTED.name: SHIFTED}


def resolve_settings(settings: SceneSettings | str) -> SceneSettings:
    """A SceneSettings from itself or its preset name ("train", "shifted")."""
    if isinstance(settings, SceneSettings):
        return settings
    if settings not in SETTINGS:
        raise KeyError(f"unknown scene settings {settings!r}; known: {', '.join(SETTINGS)}")
    return SETTINGS[settings]


# --------------------------------------------------------------------------------------------------------------------
# Palettes and lighting
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Palette:
    """Colours of a kind of street: sky, facades, windows, road, pavement, markings."""

    sky_top: tuple[Color, ...]
    sky_bottom: tuple[Color, ...]
    facades: tuple[Color, ...]
    windows: tuple[Color, ...]
    road: tuple[Color, ...]
    pavement: tuple[Color, ...]
    marking: Color
    stains: tuple[Color, ...]


PALETTES: dict[str, Palette] = {
    "city": Palette(
        sky_top=((120, 160, 205), (150, 180, 215)),
        sky_bottom=((200, 215, 230), (215, 222, 228)),
        facades=((190, 185, 175), (160, 160, 165), (205, 195, 170), (140, 150, 160), (215, 210, 200)),
        windows=((70, 90, 110), (95, 120, 140), (60, 70, 80)),
        road=((95, 95, 100), (110, 108, 105), (80, 82, 88)),
        pavement=((170, 165, 155), (150, 145, 140)),
        marking=(235, 235, 225),
        stains=((70, 70, 72), (125, 122, 118)),
    ),
    "old_town": Palette(
        sky_top=((135, 165, 195), (160, 175, 190)),
        sky_bottom=((205, 210, 210), (220, 215, 205)),
        facades=((150, 95, 75), (175, 140, 105), (120, 110, 100), (200, 180, 150), (165, 75, 60)),
        windows=((55, 50, 45), (90, 80, 70), (70, 85, 90)),
        road=((120, 112, 100), (100, 95, 88), (135, 128, 118)),
        pavement=((155, 130, 110), (140, 135, 125)),
        marking=(225, 215, 170),
        stains=((85, 78, 70), (140, 130, 115)),
    ),
    "new_district": Palette(
        sky_top=((100, 150, 215), (125, 170, 225)),
        sky_bottom=((190, 215, 240), (205, 225, 240)),
        facades=((225, 228, 232), (180, 200, 215), (120, 140, 165), (235, 225, 210), (90, 110, 130)),
        windows=((80, 120, 160), (110, 150, 185), (50, 80, 110)),
        road=((70, 72, 78), (85, 87, 92), (60, 62, 68)),
        pavement=((185, 180, 175), (200, 190, 180), (165, 170, 175)),
        marking=(245, 245, 245),
        stains=((55, 57, 60), (100, 100, 100)),
    ),
    # Only in SHIFTED.
    "snow": Palette(
        sky_top=((185, 190, 200), (200, 205, 212)),
        sky_bottom=((225, 228, 232), (235, 236, 238)),
        facades=((120, 100, 90), (95, 105, 115), (150, 140, 130)),
        windows=((40, 45, 55), (70, 75, 85)),
        road=((205, 208, 212), (185, 188, 195), (220, 222, 226)),
        pavement=((235, 236, 240), (225, 228, 232)),
        marking=(150, 150, 150),
        stains=((160, 160, 165), (245, 245, 248)),
    ),
    "desert_dust": Palette(
        sky_top=((205, 175, 120), (190, 160, 110)),
        sky_bottom=((230, 205, 150), (220, 195, 140)),
        facades=((200, 160, 100), (175, 135, 85), (215, 185, 135)),
        windows=((110, 80, 50), (140, 105, 70)),
        road=((185, 150, 100), (170, 135, 90), (195, 165, 115)),
        pavement=((210, 180, 130), (195, 165, 120)),
        marking=(240, 225, 190),
        stains=((150, 115, 75), (220, 195, 150)),
    ),
    "neon": Palette(
        sky_top=((40, 20, 70), (25, 30, 80)),
        sky_bottom=((120, 50, 120), (60, 40, 110)),
        facades=((90, 30, 110), (20, 110, 120), (150, 40, 90), (40, 60, 140)),
        windows=((255, 60, 200), (60, 240, 255), (255, 230, 80)),
        road=((45, 35, 75), (35, 45, 80), (55, 40, 70)),
        pavement=((80, 60, 110), (60, 80, 120)),
        marking=(80, 255, 220),
        stains=((25, 20, 45), (120, 60, 140)),
    ),
}


@dataclass(frozen=True)
class Lighting:
    """A global light: per-channel gain, contrast around mid-grey, haze towards a fog colour; night lights glow."""

    gain: tuple[float, float]
    tint: Color  # multiplied in, 255 = neutral
    contrast: tuple[float, float]
    haze: tuple[float, float]
    fog: Color
    lamps_on: bool


LIGHTING: dict[str, Lighting] = {
    "day": Lighting((0.95, 1.15), (255, 252, 245), (0.95, 1.15), (0.0, 0.08), (220, 225, 230), False),
    "overcast": Lighting((0.8, 0.95), (240, 245, 255), (0.75, 0.9), (0.05, 0.2), (200, 205, 210), False),
    "dusk": Lighting((0.5, 0.72), (255, 200, 150), (0.85, 1.0), (0.0, 0.12), (200, 140, 110), True),
    "night": Lighting((0.28, 0.42), (170, 185, 255), (0.9, 1.1), (0.0, 0.05), (30, 35, 60), True),
    # Only in SHIFTED: darker, brighter and foggier than anything TRAIN draws.
    "deep_night": Lighting((0.1, 0.18), (150, 170, 255), (0.9, 1.1), (0.0, 0.05), (10, 12, 25), True),
    "overexposed": Lighting((1.35, 1.6), (255, 255, 250), (0.6, 0.75), (0.1, 0.25), (255, 255, 255), False),
    "fog": Lighting((0.85, 1.0), (235, 240, 245), (0.55, 0.7), (0.45, 0.62), (205, 210, 215), False),
}

SKIN: tuple[Color, ...] = ((235, 200, 170), (215, 175, 140), (190, 150, 115), (160, 120, 90), (240, 215, 190))
HAIR: tuple[Color, ...] = ((20, 18, 18), (35, 30, 28), (55, 40, 30), (90, 65, 45), (150, 150, 150), (25, 25, 30))
CLOTHES: tuple[Color, ...] = (
    (30, 60, 140),
    (200, 40, 40),
    (40, 40, 45),
    (230, 230, 230),
    (60, 120, 60),
    (240, 180, 30),
    (120, 80, 150),
    (90, 90, 95),
    (20, 110, 200),
    (250, 120, 40),
    (140, 110, 80),
)
HELMETS: tuple[Color, ...] = (
    (250, 210, 20),
    (220, 30, 30),
    (245, 245, 245),
    (30, 90, 200),
    (250, 130, 20),
    (240, 120, 170),
    (170, 175, 185),
    (40, 160, 80),
)
# Black and dark helmets look like hair at 320 pixels: only SHIFTED draws them (dark_helmet_share).
DARK_HELMETS: tuple[Color, ...] = ((40, 40, 45), (60, 35, 30), (30, 40, 70))
VEHICLES: tuple[Color, ...] = (
    (230, 230, 232),
    (30, 30, 35),
    (160, 165, 170),
    (180, 30, 35),
    (40, 70, 140),
    (200, 200, 190),
    (70, 90, 70),
    (220, 180, 40),
)
BINS: tuple[Color, ...] = ((40, 130, 70), (30, 90, 170), (90, 95, 100), (190, 40, 40), (60, 60, 65))
BAGS: tuple[Color, ...] = ((25, 25, 28), (40, 40, 45), (235, 235, 235), (60, 120, 200), (200, 60, 60), (240, 200, 60))
GOODS: tuple[Color, ...] = (
    (220, 40, 30),
    (250, 150, 20),
    (250, 220, 40),
    (90, 170, 50),
    (140, 60, 140),
    (240, 240, 220),
    (160, 100, 50),
)
UMBRELLAS: tuple[Color, ...] = ((220, 40, 40), (30, 80, 180), (250, 200, 30), (40, 140, 70), (245, 245, 245))


def _pick(rng: np.random.Generator, options: Sequence):
    """One element of a sequence (rng.choice would turn tuples of colours into arrays)."""
    return options[int(rng.integers(len(options)))]


def _jitter(rng: np.random.Generator, color: Color, amount: int = 12) -> Color:
    """A colour a little off its nominal value, so that no two objects share an exact RGB."""
    return tuple(int(min(255, max(0, c + rng.integers(-amount, amount + 1)))) for c in color)  # type: ignore[return-value]


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


# --------------------------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------------------------


class Painter:
    """Draws each primitive on the frame, on the instance map (which object owns a pixel) and on the light map.

    ``owner`` is the instance id the next primitives belong to (0: background and unlabelled distractors, which
    still hide what is behind them). ``emissive`` marks lamps, lit windows and headlights, which night lighting
    keeps bright.
    """

    def __init__(self, image: Image.Image, track_lights: bool) -> None:
        self.image = image
        self.rgb = ImageDraw.Draw(image)
        self.ids = Image.new("L", image.size, 0)
        self.id_draw = ImageDraw.Draw(self.ids)
        self.lights = Image.new("L", image.size, 0) if track_lights else None
        self.light_draw = ImageDraw.Draw(self.lights) if self.lights is not None else None
        self.owner = 0
        self.tracked = False  # False while drawing the background: the instance map is already 0 there
        self.emissive = False
        self.glows: list[tuple[float, float, float, Color]] = []

    def _shadow(self, method: str, xy, **kwargs) -> None:
        if self.tracked:
            getattr(self.id_draw, method)(xy, fill=self.owner, **kwargs)
        if self.light_draw is not None and (self.tracked or self.emissive):
            getattr(self.light_draw, method)(xy, fill=255 if self.emissive else 0, **kwargs)

    def rect(self, xy: Box, fill: Color) -> None:
        x1, y1, x2, y2 = xy
        if x2 < x1 or y2 < y1:
            return
        self.rgb.rectangle(xy, fill=fill)
        self._shadow("rectangle", xy)

    def ellipse(self, xy: Box, fill: Color) -> None:
        x1, y1, x2, y2 = xy
        if x2 <= x1 or y2 <= y1:
            return
        self.rgb.ellipse(xy, fill=fill)
        self._shadow("ellipse", xy)

    def polygon(self, points: Sequence[tuple[float, float]], fill: Color) -> None:
        self.rgb.polygon(points, fill=fill)
        self._shadow("polygon", points)

    def line(self, points: Sequence[tuple[float, float]], fill: Color, width: float) -> None:
        w = max(1, round(width))
        self.rgb.line(points, fill=fill, width=w)
        self._shadow("line", points, width=w)

    def pieslice(self, xy: Box, start: float, end: float, fill: Color) -> None:
        x1, y1, x2, y2 = xy
        if x2 <= x1 or y2 <= y1:
            return
        self.rgb.pieslice(xy, start, end, fill=fill)
        self._shadow("pieslice", xy, start=start, end=end)

    def chord(self, xy: Box, start: float, end: float, fill: Color) -> None:
        x1, y1, x2, y2 = xy
        if x2 <= x1 or y2 <= y1:
            return
        self.rgb.chord(xy, start, end, fill=fill)
        self._shadow("chord", xy, start=start, end=end)

    def glow(self, x: float, y: float, radius: float, color: Color) -> None:
        """A light source: drawn emissive, and a halo added after the lighting when lamps are on."""
        self.glows.append((x, y, radius, color))


@dataclass
class Local:
    """Object coordinates in metres (x along the facing direction, y up from the foot point) to pixels."""

    x0: float
    y0: float
    scale: float  # pixels per metre
    facing: int = 1

    def pt(self, dx: float, dy: float) -> tuple[float, float]:
        return (self.x0 + self.facing * dx * self.scale, self.y0 - dy * self.scale)

    def box(self, cx: float, cy: float, rx: float, ry: float) -> Box:
        x, y = self.pt(cx, cy)
        return (x - rx * self.scale, y - ry * self.scale, x + rx * self.scale, y + ry * self.scale)

    def rect(self, ax: float, ay: float, bx: float, by: float) -> Box:
        x1, y1 = self.pt(ax, ay)
        x2, y2 = self.pt(bx, by)
        return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))

    def px(self, metres: float) -> float:
        return metres * self.scale


# --- people ---------------------------------------------------------------------------------------------------------


def _head(
    p: Painter,
    rng: np.random.Generator,
    t: Local,
    cx: float,
    cy: float,
    view: str,
    headwear: str,
    helmet_color: Color | None = None,
) -> None:
    """A head seen from the side, front or back, bare, in a cloth cap, or in a half or full-face helmet.

    The head is what separates the two helmet classes, so helmets get the cues a person would use: a dome larger
    than the skull, a rim, a visor or a chin strap, a highlight; hair hugs the skull and leaves the face visible.
    """
    r = 0.11
    skin = _jitter(rng, _pick(rng, SKIN), 8)
    hair = _jitter(rng, _pick(rng, HAIR), 6)
    color = _jitter(rng, helmet_color or _pick(rng, HELMETS), 10)
    if headwear == "full_face":
        p.ellipse(t.box(cx, cy, r * 1.45, r * 1.5), color)
        if view == "front":
            p.rect(t.rect(cx - r * 0.8, cy + r * 0.35, cx + r * 0.8, cy - r * 0.3), (25, 30, 40))
        elif view == "side":
            p.rect(t.rect(cx + r * 0.2, cy + r * 0.35, cx + r * 1.3, cy - r * 0.3), (25, 30, 40))
        p.ellipse(t.box(cx - r * 0.45, cy + r * 0.85, r * 0.28, r * 0.16), (250, 250, 250))
        return
    p.ellipse(t.box(cx, cy, r, r * 1.12), skin)
    if view == "back":
        p.ellipse(t.box(cx, cy + r * 0.1, r * 1.02, r * 1.05), hair)
    elif view == "side":
        # PIL angles run clockwise from 3 o'clock: 180..360 is the top half; the back of the head is on the left
        # when facing right (120..270) and on the right when facing left (270..420).
        p.pieslice(t.box(cx, cy + r * 0.08, r * 1.04, r * 1.08), 180, 360, hair)
        back = (120, 270) if t.facing > 0 else (270, 420)
        p.pieslice(t.box(cx, cy, r * 1.03, r * 1.1), back[0], back[1], hair)
    else:
        p.chord(t.box(cx, cy + r * 0.12, r * 1.04, r * 1.04), 180, 360, hair)
    if headwear == "cap":
        cap = _jitter(rng, _pick(rng, CLOTHES), 10)
        p.chord(t.box(cx, cy + r * 0.35, r * 1.02, r * 0.75), 180, 360, cap)
        brim_x = r * 1.5 if view == "side" else r * 1.0
        p.line(
            [t.pt(cx - (0 if view == "side" else brim_x), cy + r * 0.35), t.pt(cx + brim_x, cy + r * 0.35)],
            cap,
            t.px(r * 0.22),
        )
    elif headwear == "helmet":
        p.chord(t.box(cx, cy + r * 0.12, r * 1.45, r * 1.4), 180, 360, color)
        p.line(
            [t.pt(cx - r * 1.45, cy + r * 0.1), t.pt(cx + r * 1.45, cy + r * 0.1)],
            _jitter(rng, (50, 50, 55), 10),
            t.px(r * 0.22),
        )
        if view != "back":
            p.line(
                [t.pt(cx - r * 0.75, cy + r * 0.05), t.pt(cx, cy - r * 1.05), t.pt(cx + r * 0.75, cy + r * 0.05)],
                (35, 35, 35),
                t.px(r * 0.12),
            )
        if view == "side":
            p.polygon(
                [
                    t.pt(cx + r * 0.9, cy + r * 0.45),
                    t.pt(cx + r * 1.55, cy + r * 0.15),
                    t.pt(cx + r * 1.2, cy + r * 0.05),
                ],
                (40, 45, 55),
            )
        p.ellipse(t.box(cx - r * 0.5, cy + r * 0.9, r * 0.3, r * 0.14), (250, 250, 250))


def _person(p: Painter, rng: np.random.Generator, t: Local, view: str, umbrella: bool = False) -> None:
    """A pedestrian (unlabelled everywhere: the distractor the rider classes must not fire on)."""
    height = _uniform(rng, (1.55, 1.85)) / 1.75
    top = _jitter(rng, _pick(rng, CLOTHES))
    trousers = _jitter(rng, _pick(rng, (*CLOTHES[:5], (50, 50, 70))))
    stride = _uniform(rng, (0.0, 0.22)) if view == "side" else 0.0
    leg_w = t.px(0.13)
    hip = 0.85 * height
    if view == "side":
        p.line([t.pt(0, hip), t.pt(stride, 0.02)], trousers, leg_w)
        p.line([t.pt(0, hip), t.pt(-stride, 0.02)], trousers, leg_w)
    else:
        p.line([t.pt(-0.1, hip), t.pt(-0.12, 0.02)], trousers, leg_w)
        p.line([t.pt(0.1, hip), t.pt(0.12, 0.02)], trousers, leg_w)
    width = 0.2 if view == "side" else 0.26
    p.polygon(
        [
            t.pt(-width, 0.82 * height),
            t.pt(width, 0.82 * height),
            t.pt(width * 1.1, 1.45 * height),
            t.pt(-width * 1.1, 1.45 * height),
        ],
        top,
    )
    arm = t.px(0.09)
    p.line([t.pt(-width, 1.42 * height), t.pt(-width - 0.05, 0.95 * height)], top, arm)
    p.line([t.pt(width, 1.42 * height), t.pt(width + 0.05 + stride * 0.3, 0.95 * height)], top, arm)
    headwear = "cap" if rng.random() < 0.15 else "none"
    _head(p, rng, t, 0.02, 1.6 * height, view, headwear)
    if umbrella:
        canopy = _jitter(rng, _pick(rng, UMBRELLAS))
        p.line([t.pt(width + 0.05, 1.0 * height), t.pt(width * 0.3, 2.0 * height)], (60, 60, 60), t.px(0.03))
        p.pieslice(t.box(width * 0.3, 1.95 * height, 0.55, 0.3), 180, 360, canopy)


# --- two-wheelers ---------------------------------------------------------------------------------------------------


def _wheel_side(p: Painter, t: Local, cx: float, radius: float, tyre: Color) -> None:
    p.ellipse(t.box(cx, radius, radius, radius), tyre)
    p.ellipse(t.box(cx, radius, radius * 0.55, radius * 0.55), (150, 150, 155))
    p.ellipse(t.box(cx, radius, radius * 0.18, radius * 0.18), (60, 60, 60))


def _two_wheeler(p: Painter, rng: np.random.Generator, t: Local, view: str, motorcycle: bool) -> tuple[float, float]:
    """An e-bike or motorcycle seen from the side, front or back; returns the rider's (hip, handlebar) heights."""
    body = _jitter(rng, _pick(rng, VEHICLES))
    tyre = (25, 25, 28)
    radius = 0.3 if motorcycle else 0.24
    if view == "side":
        _wheel_side(p, t, -0.62, radius, tyre)
        _wheel_side(p, t, 0.62, radius, tyre)
        if motorcycle:
            p.polygon(
                [
                    t.pt(-0.55, radius + 0.1),
                    t.pt(-0.2, radius + 0.45),
                    t.pt(0.35, radius + 0.5),
                    t.pt(0.5, radius + 0.1),
                    t.pt(0.0, radius - 0.05),
                ],
                body,
            )
            p.line([t.pt(-0.3, radius * 0.9), t.pt(-0.85, radius * 1.2)], (170, 170, 175), t.px(0.07))
        else:
            p.polygon(
                [
                    t.pt(-0.7, radius + 0.05),
                    t.pt(-0.45, 0.7),
                    t.pt(-0.05, 0.72),
                    t.pt(0.05, 0.3),
                    t.pt(0.45, 0.3),
                    t.pt(0.55, radius + 0.05),
                    t.pt(0.3, 0.18),
                    t.pt(-0.45, 0.18),
                ],
                body,
            )
        p.line([t.pt(0.62, radius), t.pt(0.45, 1.05)], (70, 70, 75), t.px(0.05))
        p.line([t.pt(0.4, 1.05), t.pt(0.55, 1.08)], (30, 30, 30), t.px(0.05))
        p.rect(t.rect(-0.45, 0.74, 0.05, 0.82), (30, 30, 32))
        p.ellipse(t.box(0.52, 0.85, 0.06, 0.05), (250, 245, 200))
        p.glow(*t.pt(0.56, 0.85), t.px(0.35), (255, 240, 190))
        return 0.82, 1.05
    panel_w = 0.26 if motorcycle else 0.22
    p.ellipse(t.box(0, radius, 0.07, radius), tyre)
    p.polygon([t.pt(-panel_w, 0.25), t.pt(panel_w, 0.25), t.pt(panel_w * 0.8, 0.95), t.pt(-panel_w * 0.8, 0.95)], body)
    p.line([t.pt(-0.36, 1.05), t.pt(0.36, 1.05)], (30, 30, 30), t.px(0.05))
    p.line([t.pt(-0.3, 1.05), t.pt(-0.36, 1.2)], (40, 40, 40), t.px(0.025))
    p.line([t.pt(0.3, 1.05), t.pt(0.36, 1.2)], (40, 40, 40), t.px(0.025))
    lamp = (250, 245, 200) if view == "front" else (230, 30, 30)
    p.ellipse(t.box(0, 0.75, 0.09, 0.07), lamp)
    p.glow(*t.pt(0, 0.75), t.px(0.4 if view == "front" else 0.25), lamp)
    return 0.82, 1.05


def _rider(
    p: Painter,
    rng: np.random.Generator,
    t: Local,
    view: str,
    headwear: str,
    motorcycle: bool,
    helmet_color: Color | None = None,
) -> None:
    """A rider on an e-bike or motorcycle, sometimes with a delivery box: the helmet algorithm's object."""
    hip, bar = _two_wheeler(p, rng, t, view, motorcycle)
    jacket = _jitter(rng, _pick(rng, CLOTHES))
    trousers = _jitter(rng, _pick(rng, CLOTHES[:5]))
    if view == "side":
        if rng.random() < 0.3:
            p.rect(
                t.rect(-0.85, 0.78, -0.4, 1.2),
                _jitter(rng, _pick(rng, ((245, 200, 20), (30, 140, 230), (230, 60, 40)))),
            )
        p.line([t.pt(-0.2, hip + 0.05), t.pt(0.15, hip + 0.12), t.pt(0.18, 0.35)], trousers, t.px(0.15))
        p.polygon([t.pt(-0.32, hip), t.pt(-0.05, hip), t.pt(0.12, 1.45), t.pt(-0.18, 1.45)], jacket)
        p.line([t.pt(0.0, 1.4), t.pt(0.3, 1.15), t.pt(0.45, bar)], jacket, t.px(0.09))
        _head(p, rng, t, 0.0, 1.62, "side", headwear, helmet_color)
        return
    p.line([t.pt(-0.12, hip + 0.05), t.pt(-0.25, 0.55), t.pt(-0.22, 0.3)], trousers, t.px(0.14))
    p.line([t.pt(0.12, hip + 0.05), t.pt(0.25, 0.55), t.pt(0.22, 0.3)], trousers, t.px(0.14))
    p.polygon([t.pt(-0.24, hip), t.pt(0.24, hip), t.pt(0.27, 1.47), t.pt(-0.27, 1.47)], jacket)
    p.line([t.pt(-0.25, 1.42), t.pt(-0.33, bar)], jacket, t.px(0.09))
    p.line([t.pt(0.25, 1.42), t.pt(0.33, bar)], jacket, t.px(0.09))
    _head(p, rng, t, 0.0, 1.63, view, headwear, helmet_color)


def _parked_bike(p: Painter, rng: np.random.Generator, t: Local) -> None:
    """An e-bike without a rider: looks like half a rider, is not one."""
    _two_wheeler(p, rng, t, "side", motorcycle=rng.random() < 0.3)


# --- cars, poles ----------------------------------------------------------------------------------------------------


def _car(p: Painter, rng: np.random.Generator, t: Local, view: str) -> None:
    body = _jitter(rng, _pick(rng, VEHICLES))
    glass = _jitter(rng, (60, 75, 90), 10)
    if view == "side":
        p.polygon(
            [
                t.pt(-2.1, 0.3),
                t.pt(2.1, 0.3),
                t.pt(2.15, 0.85),
                t.pt(1.2, 0.95),
                t.pt(0.6, 1.45),
                t.pt(-1.2, 1.45),
                t.pt(-1.9, 0.95),
                t.pt(-2.15, 0.9),
            ],
            body,
        )
        p.polygon([t.pt(0.5, 1.0), t.pt(0.45, 1.38), t.pt(-0.2, 1.38), t.pt(-0.2, 1.0)], glass)
        p.polygon([t.pt(-0.3, 1.0), t.pt(-0.3, 1.38), t.pt(-1.1, 1.38), t.pt(-1.6, 1.0)], glass)
        for cx in (-1.35, 1.35):
            p.ellipse(t.box(cx, 0.33, 0.33, 0.33), (25, 25, 25))
            p.ellipse(t.box(cx, 0.33, 0.17, 0.17), (160, 160, 165))
        p.ellipse(t.box(2.05, 0.72, 0.08, 0.06), (250, 245, 210))
        p.glow(*t.pt(2.1, 0.72), t.px(0.6), (255, 240, 200))
        return
    p.rect(t.rect(-0.9, 0.2, 0.9, 0.95), body)
    p.polygon([t.pt(-0.8, 0.95), t.pt(0.8, 0.95), t.pt(0.6, 1.45), t.pt(-0.6, 1.45)], body)
    p.polygon([t.pt(-0.7, 1.0), t.pt(0.7, 1.0), t.pt(0.55, 1.38), t.pt(-0.55, 1.38)], glass)
    lamp = (250, 245, 210) if view == "front" else (220, 30, 30)
    for side in (-0.7, 0.7):
        p.rect(t.rect(side - 0.15, 0.7, side + 0.15, 0.82), lamp)
        p.glow(*t.pt(side, 0.76), t.px(0.5), lamp)
    p.rect(t.rect(-0.85, 0.05, -0.6, 0.25), (25, 25, 25))
    p.rect(t.rect(0.6, 0.05, 0.85, 0.25), (25, 25, 25))


def _pole(p: Painter, rng: np.random.Generator, t: Local) -> None:
    """A lamp post or a tree: a thin occluder in front of whatever stands behind it."""
    if rng.random() < 0.5:
        p.rect(t.rect(-0.08, 0, 0.08, 5.5), _jitter(rng, (80, 85, 90), 15))
        p.line([t.pt(0, 5.4), t.pt(0.9, 5.6)], (80, 85, 90), t.px(0.08))
        p.emissive = True
        p.ellipse(t.box(0.9, 5.5, 0.25, 0.1), (255, 240, 200))
        p.emissive = False
        p.glow(*t.pt(0.9, 5.45), t.px(1.6), (255, 220, 160))
        return
    p.rect(t.rect(-0.12, 0, 0.12, 2.6), _jitter(rng, (90, 65, 45), 15))
    leaves = _jitter(rng, (55, 110, 50), 20)
    for _ in range(4):
        p.ellipse(t.box(_uniform(rng, (-0.8, 0.8)), _uniform(rng, (2.6, 4.0)), 0.9, 0.7), leaves)


# --- bins, litter -------------------------------------------------------------------------------------------------


def _bag(p: Painter, rng: np.random.Generator, t: Local, cx: float, cy: float, size: float) -> None:
    color = _jitter(rng, _pick(rng, BAGS), 12)
    p.ellipse(t.box(cx, cy, size * _uniform(rng, (0.8, 1.2)), size * _uniform(rng, (0.6, 0.9))), color)
    p.line([t.pt(cx - size * 0.1, cy + size * 0.6), t.pt(cx + size * 0.1, cy + size * 0.95)], color, t.px(size * 0.2))


def _debris(p: Painter, rng: np.random.Generator, t: Local, cx: float, spread: float, count: int) -> None:
    """Boxes, bottles, paper and bags on the ground around cx."""
    for _ in range(count):
        x = cx + _uniform(rng, (-spread, spread))
        kind = rng.random()
        if kind < 0.4:
            _bag(p, rng, t, x, 0.12, _uniform(rng, (0.1, 0.18)))
        elif kind < 0.65:
            w, h = _uniform(rng, (0.12, 0.3)), _uniform(rng, (0.08, 0.2))
            p.rect(t.rect(x - w, 0, x + w, h), _jitter(rng, (170, 125, 75), 20))
        elif kind < 0.85:
            p.polygon(
                [t.pt(x, 0), t.pt(x + 0.15, 0.02), t.pt(x + 0.1, 0.09), t.pt(x - 0.05, 0.07)],
                _jitter(rng, (235, 235, 225), 15),
            )
        else:
            p.rect(t.rect(x - 0.03, 0, x + 0.03, 0.22), _jitter(rng, (60, 150, 90), 40))


def _bin(p: Painter, rng: np.random.Generator, t: Local, overflowing: bool) -> None:
    """A 240-litre wheelie bin in a sorting colour; overflowing: lid up, bags heaped above the rim and at its foot."""
    color = _jitter(rng, _pick(rng, BINS), 10)
    darker = tuple(int(c * 0.7) for c in color)
    p.ellipse(t.box(-0.2, 0.06, 0.06, 0.06), (20, 20, 20))
    p.ellipse(t.box(0.2, 0.06, 0.06, 0.06), (20, 20, 20))
    p.polygon([t.pt(-0.26, 0.05), t.pt(0.26, 0.05), t.pt(0.3, 0.98), t.pt(-0.3, 0.98)], color)
    p.rect(t.rect(-0.18, 0.45, 0.18, 0.65), (235, 235, 235))
    p.rect(t.rect(-0.13, 0.52, 0.13, 0.58), darker)
    if not overflowing:
        p.rect(t.rect(-0.33, 0.98, 0.33, 1.07), darker)
        return
    for _ in range(int(rng.integers(4, 8))):
        _bag(p, rng, t, _uniform(rng, (-0.3, 0.3)), _uniform(rng, (1.0, 1.35)), _uniform(rng, (0.12, 0.2)))
    p.polygon([t.pt(-0.33, 1.0), t.pt(0.33, 1.0), t.pt(0.25, 1.55), t.pt(-0.38, 1.08)], darker)
    _debris(p, rng, t, _uniform(rng, (-0.2, 0.2)), 0.55, int(rng.integers(3, 7)))


def _litter(p: Painter, rng: np.random.Generator, t: Local) -> None:
    """A heap of exposed rubbish on the pavement, no bin in sight."""
    width = _uniform(rng, (0.5, 0.9))
    for _ in range(int(rng.integers(3, 6))):
        _bag(
            p,
            rng,
            t,
            _uniform(rng, (-width * 0.6, width * 0.6)),
            _uniform(rng, (0.15, 0.35)),
            _uniform(rng, (0.15, 0.25)),
        )
    _debris(p, rng, t, 0.0, width, int(rng.integers(5, 10)))


# --- vending ------------------------------------------------------------------------------------------------------


def _umbrella(p: Painter, rng: np.random.Generator, t: Local, cx: float, height: float, radius: float) -> None:
    colors = [_jitter(rng, _pick(rng, UMBRELLAS)), _jitter(rng, _pick(rng, UMBRELLAS))]
    p.line([t.pt(cx, 0.8), t.pt(cx, height)], (70, 70, 70), t.px(0.04))
    box = t.box(cx, height - 0.05, radius, radius * 0.45)
    stripes = 6
    for i in range(stripes):
        p.pieslice(box, 180 + i * 180 / stripes, 180 + (i + 1) * 180 / stripes, colors[i % 2])


def _goods(p: Painter, rng: np.random.Generator, t: Local, x1: float, x2: float, y: float) -> None:
    for _ in range(int(rng.integers(6, 12))):
        cx = _uniform(rng, (x1, x2))
        size = _uniform(rng, (0.05, 0.1))
        p.ellipse(t.box(cx, y + size, size, size), _jitter(rng, _pick(rng, GOODS), 15))


def _stall(p: Painter, rng: np.random.Generator, t: Local) -> None:
    """A street stall: trestle table with cloth and goods, a vendor behind it, a striped umbrella or a tarp."""
    half = _uniform(rng, (0.55, 0.9))
    vendor = Local(*t.pt(_uniform(rng, (-0.3, 0.3)), 0.0), t.scale, t.facing)
    _person(p, rng, vendor, "front")
    cloth = _jitter(rng, _pick(rng, (*CLOTHES, (200, 40, 40), (40, 120, 200))))
    p.rect(t.rect(-half, 0.0, -half + 0.05, 0.78), (60, 60, 60))
    p.rect(t.rect(half - 0.05, 0.0, half, 0.78), (60, 60, 60))
    p.rect(t.rect(-half, 0.45, half, 0.8), cloth)
    crates = int(rng.integers(1, 4))
    for i in range(crates):
        x1 = -half + 2 * half * i / crates + 0.04
        x2 = -half + 2 * half * (i + 1) / crates - 0.04
        p.rect(t.rect(x1, 0.8, x2, 0.92), _jitter(rng, (190, 150, 90), 20))
        _goods(p, rng, t, x1 + 0.05, x2 - 0.05, 0.9)
    if rng.random() < 0.7:
        _umbrella(p, rng, t, _uniform(rng, (-0.3, 0.3)), _uniform(rng, (2.0, 2.3)), _uniform(rng, (0.9, 1.25)))
    else:
        tarp = _jitter(rng, _pick(rng, ((40, 90, 180), (200, 60, 50), (240, 240, 235))))
        p.rect(t.rect(-half - 0.1, 0.0, -half - 0.05, 2.0), (70, 70, 70))
        p.rect(t.rect(half + 0.05, 0.0, half + 0.1, 2.0), (70, 70, 70))
        p.polygon(
            [t.pt(-half - 0.2, 1.95), t.pt(half + 0.2, 1.95), t.pt(half + 0.1, 2.2), t.pt(-half - 0.1, 2.2)], tarp
        )


def _cart(p: Painter, rng: np.random.Generator, t: Local) -> None:
    """A vendor's tricycle: cargo bed with a glass food cabinet or heaped goods, the vendor beside it."""
    frame = _jitter(rng, _pick(rng, ((40, 90, 170), (180, 40, 40), (70, 70, 75), (230, 230, 230))))
    _wheel_side(p, t, -0.75, 0.25, (25, 25, 28))
    _wheel_side(p, t, 0.8, 0.25, (25, 25, 28))
    p.line([t.pt(0.8, 0.25), t.pt(0.65, 1.0), t.pt(0.45, 1.0)], frame, t.px(0.05))
    p.rect(t.rect(-1.05, 0.45, 0.35, 0.6), frame)
    if rng.random() < 0.5:
        p.rect(t.rect(-1.0, 0.6, 0.3, 1.35), _jitter(rng, (170, 210, 230), 15))
        p.rect(t.rect(-1.0, 1.3, 0.3, 1.4), frame)
        _goods(p, rng, t, -0.9, 0.2, 0.65)
        p.rect(t.rect(-0.85, 1.1, 0.15, 1.22), _jitter(rng, (220, 40, 30), 20))
    else:
        p.rect(t.rect(-1.0, 0.6, 0.3, 0.8), _jitter(rng, (180, 140, 90), 20))
        _goods(p, rng, t, -0.95, 0.25, 0.78)
        _goods(p, rng, t, -0.8, 0.1, 0.92)
    if rng.random() < 0.5:
        _umbrella(p, rng, t, -0.35, _uniform(rng, (1.9, 2.1)), _uniform(rng, (0.7, 0.9)))
    vendor = Local(*t.pt(0.6 if rng.random() < 0.5 else -1.3, 0.0), t.scale, t.facing)
    _person(p, rng, vendor, "side")


# --------------------------------------------------------------------------------------------------------------------
# Scene composition
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A drawable kind of object: nominal size in metres (for placement) and how to draw it."""

    width_m: float
    height_m: float
    draw: Callable[[Painter, np.random.Generator, Local, dict], None]


def _draw_rider(p: Painter, rng: np.random.Generator, t: Local, o: dict) -> None:
    _rider(p, rng, t, o["view"], o["headwear"], o["motorcycle"], o.get("helmet_color"))


KINDS: dict[str, Kind] = {
    "rider": Kind(1.75, 1.8, _draw_rider),
    "person": Kind(0.6, 1.75, lambda p, rng, t, o: _person(p, rng, t, o["view"], o.get("umbrella", False))),
    "parked_bike": Kind(1.7, 1.1, lambda p, rng, t, o: _parked_bike(p, rng, t)),
    "car": Kind(4.3, 1.45, lambda p, rng, t, o: _car(p, rng, t, o["view"])),
    "pole": Kind(0.3, 5.6, lambda p, rng, t, o: _pole(p, rng, t)),
    "bin": Kind(0.7, 1.1, lambda p, rng, t, o: _bin(p, rng, t, overflowing=False)),
    "overflowing_bin": Kind(1.1, 1.45, lambda p, rng, t, o: _bin(p, rng, t, overflowing=True)),
    "litter": Kind(1.5, 0.55, lambda p, rng, t, o: _litter(p, rng, t)),
    "stall": Kind(2.2, 2.3, lambda p, rng, t, o: _stall(p, rng, t)),
    "cart": Kind(2.4, 1.9, lambda p, rng, t, o: _cart(p, rng, t)),
}


@dataclass
class Placed:
    """An object in the frame: its kind, its label (None: distractor), where its foot is and how big it is."""

    kind: str
    label: str | None
    x: float
    y: float
    scale: float
    facing: int
    options: dict = field(default_factory=dict)

    def approx_box(self) -> Box:
        """The box the object will roughly cover, before it is drawn (for spreading objects out)."""
        k = KINDS[self.kind]
        width = k.width_m * self.scale * (0.45 if self.options.get("view") in ("front", "back") else 1.0)
        return (self.x - width / 2, self.y - k.height_m * self.scale, self.x + width / 2, self.y)


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Camera:
    """Where the horizon is and how high the camera hangs: together they give each ground row its scale."""

    width: int
    height: int
    horizon: float  # row of the horizon in pixels
    height_m: float
    unit: float  # frame height / 360: pixel sizes in SceneSettings are for a 360-high frame

    def scale_at(self, y: float) -> float:
        """Pixels per metre for an object standing on the ground at row y (pinhole camera over a flat street)."""
        return max(0.0, y - self.horizon) / self.height_m

    def row_for_scale(self, scale: float) -> float:
        return self.horizon + scale * self.height_m


def _place(
    rng: np.random.Generator,
    cam: Camera,
    settings: SceneSettings,
    kind: str,
    label: str | None,
    taken: list[Box],
    options: dict,
) -> Placed | None:
    """Put one object on the ground where its size lies in the settings' range, away from other labelled ones."""
    k = KINDS[kind]
    size_m = max(k.height_m, k.width_m * 0.6)
    lo = settings.min_object_px * cam.unit / size_m
    hi = settings.max_object_px * cam.unit / size_m
    if label is None:
        lo *= 0.6
    y_lo = max(cam.row_for_scale(lo), cam.horizon + 0.08 * (cam.height - cam.horizon))
    y_hi = min(cam.row_for_scale(hi), cam.height * 1.04)
    if y_lo >= y_hi:
        y_lo = y_hi = min(cam.height * 1.04, max(y_lo, y_hi))
    facing = 1 if rng.random() < 0.5 else -1
    for _ in range(8):
        y = float(rng.uniform(y_lo, y_hi)) if y_hi > y_lo else y_lo
        x = float(rng.uniform(-0.03, 1.03)) * cam.width
        placed = Placed(kind, label, x, y, cam.scale_at(y), facing, options)
        box = placed.approx_box()
        if label is None or all(_iou(box, other) < 0.25 for other in taken):
            if label is not None:
                taken.append(box)
            return placed
    return None


def _scene_objects(rng: np.random.Generator, algorithm: str, settings: SceneSettings, cam: Camera) -> list[Placed]:
    """Which objects a frame of this algorithm holds: the labelled ones and the distractors around them."""
    taken: list[Box] = []
    placed: list[Placed] = []
    empty = rng.random() < settings.empty_probability

    def add(kind: str, label: str | None, count: int, options: Callable[[], dict] | None = None) -> None:
        for _ in range(count):
            o = _place(rng, cam, settings, kind, label, taken, options() if options else {})
            if o is not None:
                placed.append(o)

    def clutter(lo: int, hi: int) -> int:
        return int(rng.integers(lo, round(hi * settings.clutter) + 1))

    def rider_options() -> dict:
        view = _pick(rng, ("side", "side", "side", "side", "side", "front", "back"))
        motorcycle = rng.random() < 0.3
        if rng.random() < settings.helmet_share:
            headwear = "full_face" if motorcycle and rng.random() < 0.5 else "helmet"
        else:
            headwear = "cap" if rng.random() < settings.cap_share else "none"
        dark = rng.random() < settings.dark_helmet_share
        color = _pick(rng, DARK_HELMETS if dark else HELMETS)
        return {"view": view, "headwear": headwear, "motorcycle": motorcycle, "helmet_color": color}

    def person_options(umbrella_share: float = 0.0) -> dict:
        return {"view": _pick(rng, ("side", "front", "back")), "umbrella": rng.random() < umbrella_share}

    def car_options() -> dict:
        return {"view": _pick(rng, ("side", "side", "front", "back"))}

    if algorithm == "helmet":
        if not empty:
            for _ in range(int(rng.integers(2, 8))):
                o = rider_options()
                label = "rider_helmet" if o["headwear"] in ("helmet", "full_face") else "rider_no_helmet"
                add("rider", label, 1, lambda o=o: o)
        add("person", None, clutter(0, 4), person_options)
        add("parked_bike", None, clutter(0, 2))
        add("car", None, clutter(0, 2), car_options)
        add("bin", None, clutter(0, 1))
    elif algorithm == "garbage_overflow":
        if not empty:
            add("overflowing_bin", "overflowing_bin", int(rng.integers(0, 3)))
            add("bin", "bin", int(rng.integers(0, 3)))
            add("litter", "litter", int(rng.integers(0, 3)))
            if not any(o.label for o in placed):
                kind = _pick(rng, ("overflowing_bin", "bin", "litter"))
                add(kind, kind, 1)
        add("person", None, clutter(0, 3), person_options)
        add("rider", None, clutter(0, 1), rider_options)
        add("car", None, clutter(0, 2), car_options)
    elif algorithm == "street_vending":
        if not empty:
            add("stall", "vendor_stall", int(rng.integers(0, 4)))
            add("cart", "vendor_cart", int(rng.integers(0, 3)))
            if not any(o.label for o in placed):
                kind, label = _pick(rng, (("stall", "vendor_stall"), ("cart", "vendor_cart")))
                add(kind, label, 1)
        add("person", None, clutter(1, 5), lambda: person_options(0.3))
        add("rider", None, clutter(0, 1), rider_options)
        add("car", None, clutter(0, 2), car_options)
        add("bin", None, clutter(0, 1))
    else:
        raise KeyError(f"no scenes for algorithm {algorithm!r}")
    add("pole", None, int(rng.integers(settings.pole_count[0], settings.pole_count[1] + 1)))
    return placed


def _background(p: Painter, rng: np.random.Generator, cam: Camera, palette: Palette, night: bool) -> Image.Image:
    """Sky, a row of buildings with windows, the road with perspective markings, a pavement and stains."""
    w, h, hz = cam.width, cam.height, cam.horizon
    top = np.array(_jitter(rng, _pick(rng, palette.sky_top)), np.float32)
    bottom = np.array(_jitter(rng, _pick(rng, palette.sky_bottom)), np.float32)
    rows = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    sky = np.broadcast_to((top * (1 - rows) + bottom * rows).astype(np.uint8), (h, w, 3))
    p.image.paste(Image.fromarray(np.ascontiguousarray(sky)))
    base = hz + 0.06 * (h - hz)
    x = -float(rng.uniform(0, 40)) * cam.unit
    while x < w:
        bw = float(rng.uniform(0.1, 0.3)) * w
        bh = float(rng.uniform(0.35, 1.1)) * base
        facade = _jitter(rng, _pick(rng, palette.facades))
        p.rect((x, base - bh, x + bw, base), facade)
        win = _pick(rng, palette.windows)
        cols, floors = int(rng.integers(3, 7)), int(max(1, bh / (18 * cam.unit)))
        ww, wh = bw / (cols * 2 + 1), min(9 * cam.unit, bh / (floors * 2 + 1))
        for i in range(floors):
            wy = base - bh + (2 * i + 1) * (bh / (floors * 2 + 1))
            for j in range(cols):
                wx = x + (2 * j + 1) * ww
                lit = night and rng.random() < 0.35
                p.emissive = lit
                p.rect((wx, wy, wx + ww, wy + wh), (255, 225, 150) if lit else _jitter(rng, win, 6))
        p.emissive = False
        if rng.random() < 0.4:
            sign = _jitter(rng, _pick(rng, GOODS), 10)
            p.emissive = night
            p.rect((x + 0.1 * bw, base - 22 * cam.unit, x + 0.9 * bw, base - 12 * cam.unit), sign)
            p.emissive = False
        x += bw + float(rng.uniform(0, 12)) * cam.unit
    road = _jitter(rng, _pick(rng, palette.road), 6)
    p.rect((0, base, w, h), road)
    vanish = float(rng.uniform(0.25, 0.75)) * w
    left = rng.random() < 0.5
    edge = float(rng.uniform(0.0, 0.35)) * w if left else float(rng.uniform(0.65, 1.0)) * w
    far = vanish + (edge - vanish) * (base - hz) / (h - hz)
    pavement = _jitter(rng, _pick(rng, palette.pavement), 6)
    if left:
        p.polygon([(0, base), (far, base), (edge, h), (0, h)], pavement)
    else:
        p.polygon([(far, base), (w, base), (w, h), (edge, h)], pavement)
    p.line([(far, base), (edge, h)], _jitter(rng, (200, 200, 195), 10), 3 * cam.unit)
    for lane in rng.uniform(-0.6, 0.6, size=int(rng.integers(1, 3))):
        bottom_x = vanish + lane * w
        for k in range(6):
            f1, f2 = (k + 0.2) / 6, (k + 0.6) / 6
            y1, y2 = base + (h - base) * f1 * f1, base + (h - base) * f2 * f2
            x1 = vanish + (bottom_x - vanish) * (y1 - hz) / (h - hz)
            x2 = vanish + (bottom_x - vanish) * (y2 - hz) / (h - hz)
            p.line([(x1, y1), (x2, y2)], palette.marking, max(1.0, 4 * cam.unit * (y2 - hz) / (h - hz)))
    for _ in range(int(rng.integers(2, 7))):
        sy = float(rng.uniform(base, h))
        sx = float(rng.uniform(0, w))
        size = (sy - hz) / (h - hz) * float(rng.uniform(15, 50)) * cam.unit
        p.ellipse((sx - size, sy - size * 0.3, sx + size, sy + size * 0.3), _jitter(rng, _pick(rng, palette.stains), 8))
    return p.image


@cache
def _noise_tile() -> Image.Image:
    """A fixed tile of Gaussian noise around 128 (cropped at a random offset per frame: no per-frame sampling)."""
    values = np.random.default_rng(20261205).normal(128.0, 40.0, size=(720, 1280, 3))
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))


@cache
def _glow_sprite() -> Image.Image:
    """A radial falloff used as the mask of every light's halo."""
    axis = np.linspace(-1.0, 1.0, 64, dtype=np.float32)
    distance = np.sqrt(axis[None, :] ** 2 + axis[:, None] ** 2)
    return Image.fromarray((np.clip(1.0 - distance, 0.0, 1.0) ** 2 * 230).astype(np.uint8))


def _lighting_lut(rng: np.random.Generator, light: Lighting) -> list[int]:
    """Gain, tint, contrast and haze as one per-channel lookup table (applied in C by Image.point)."""
    gain = _uniform(rng, light.gain)
    contrast = _uniform(rng, light.contrast)
    haze = _uniform(rng, light.haze)
    values = np.arange(256, dtype=np.float32)
    lut: list[int] = []
    for channel in range(3):
        v = values * gain * light.tint[channel] / 255.0
        v = (v - 128.0 * gain) * contrast + 128.0 * gain
        v = v * (1.0 - haze) + haze * light.fog[channel]
        lut.extend(np.clip(v, 0, 255).astype(np.uint8).tolist())
    return lut


def _finish(rng: np.random.Generator, p: Painter, cam: Camera, settings: SceneSettings, light: Lighting) -> Image.Image:
    """Lighting, lamps and halos, blur and sensor noise: what the camera adds on top of the scene."""
    image = p.image.point(_lighting_lut(rng, light))
    if light.lamps_on and p.lights is not None:
        image = Image.composite(p.image, image, p.lights)
        sprite = _glow_sprite()
        for x, y, radius, color in p.glows:
            r = int(max(2.0, radius))
            image.paste(
                color, (int(x - r), int(y - r), int(x - r) + 2 * r, int(y - r) + 2 * r), sprite.resize((2 * r, 2 * r))
            )
    if rng.random() < settings.blur_probability:
        image = image.filter(ImageFilter.GaussianBlur(_uniform(rng, settings.blur_radius) * cam.unit))
    sigma = _uniform(rng, settings.noise)
    tile = _noise_tile()
    ox = int(rng.integers(0, max(1, tile.width - cam.width)))
    oy = int(rng.integers(0, max(1, tile.height - cam.height)))
    noise = tile.crop((ox, oy, ox + cam.width, oy + cam.height))
    k = sigma / 40.0
    noise = noise.point([int(min(255, max(0, 128 + (v - 128) * k))) for v in range(256)] * 3)
    return ImageChops.add(image, noise, 1.0, -128)


def _visible_boxes(p: Painter, objects: list[Placed], extents: list[Box | None], size: tuple[int, int]) -> list[dict]:
    """Boxes of what is left visible of each labelled object; mostly hidden objects are not labelled."""
    w, h = size
    ids = np.asarray(p.ids)
    result: list[dict] = []
    for index, (obj, extent) in enumerate(zip(objects, extents, strict=True), start=1):
        if obj.label is None or extent is None:
            continue
        x1, y1 = max(0, (math.floor(extent[0])) - 2), max(0, (math.floor(extent[1])) - 2)
        x2, y2 = min(w, (math.ceil(extent[2])) + 2), min(h, (math.ceil(extent[3])) + 2)
        if x2 <= x1 or y2 <= y1:
            continue
        mask = ids[y1:y2, x1:x2] == index
        visible = int(mask.sum())
        if visible == 0:
            continue
        drawn = obj.options.get("_area", visible)
        if visible / max(drawn, 1) < 0.45:
            continue
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        box = (float(x1 + cols[0]), float(y1 + rows[0]), float(x1 + cols[-1] + 1), float(y1 + rows[-1] + 1))
        if box[2] - box[0] < 6 or box[3] - box[1] < 6:
            continue
        result.append({"category": obj.label, "bbox": box, "visibility": round(visible / max(drawn, 1), 3)})
    return result


def draw_frame(
    rng: np.random.Generator,
    algorithm: str,
    settings: SceneSettings | str = "train",
    size: tuple[int, int] = (640, 360),
) -> tuple[Image.Image, list[dict]]:
    """Draw one street frame for an algorithm; returns the RGB image and its labels.

    Each label is ``{"category": class name, "bbox": (x1, y1, x2, y2) in pixels, "visibility": 0..1}``. The same
    rng state gives the same frame. JPEG compression is not applied here (see :func:`encode_jpeg`).
    """
    image, boxes, _ = draw_frame_with_scene(rng, algorithm, settings, size)
    return image, boxes


def draw_frame_with_scene(
    rng: np.random.Generator,
    algorithm: str,
    settings: SceneSettings | str = "train",
    size: tuple[int, int] = (640, 360),
) -> tuple[Image.Image, list[dict], dict]:
    """:func:`draw_frame`, plus how the frame was drawn (palette, lighting, camera): for per-condition metrics."""
    settings = resolve_settings(settings)
    width, height = size
    palette_name = _pick(rng, settings.palettes)
    palette = PALETTES[palette_name]
    light_name = _pick(rng, settings.lighting)
    light = LIGHTING[light_name]
    horizon = _uniform(rng, settings.horizon)
    cam = Camera(width, height, horizon * height, _uniform(rng, settings.camera_height_m), height / 360.0)
    painter = Painter(Image.new("RGB", size), track_lights=light.lamps_on)
    _background(painter, rng, cam, palette, light.lamps_on)
    objects = sorted(_scene_objects(rng, algorithm, settings, cam), key=lambda o: o.y)
    painter.tracked = True
    extents: list[Box | None] = []
    for index, obj in enumerate(objects, start=1):
        painter.owner = index if obj.label is not None else 0
        t = Local(obj.x, obj.y, obj.scale, obj.facing)
        if obj.label is None:
            KINDS[obj.kind].draw(painter, rng, t, obj.options)
            extents.append(None)
            continue
        extents.append(_object_extent(painter, rng, obj, t))
    boxes = _visible_boxes(painter, objects, extents, size)
    image = _finish(rng, painter, cam, settings, light)
    scene = {
        "settings": settings.name,
        "palette": palette_name,
        "lighting": light_name,
        "camera_height_m": round(cam.height_m, 2),
        "horizon": round(horizon, 3),
    }
    return image, boxes, scene


def _object_extent(painter: Painter, rng: np.random.Generator, obj: Placed, t: Local) -> Box | None:
    """Draw a labelled object and return its full (unoccluded) extent; its drawn area goes into obj.options."""
    approx = obj.approx_box()
    margin = 0.6 * (approx[2] - approx[0]) + 0.3 * (approx[3] - approx[1])
    x1 = max(0, int(approx[0] - margin))
    y1 = max(0, int(approx[1] - margin))
    x2 = min(painter.image.width, int(approx[2] + margin))
    y2 = min(painter.image.height, int(approx[3] + margin * 0.3) + 1)
    if x2 <= x1 or y2 <= y1:
        return None
    before = np.asarray(painter.ids.crop((x1, y1, x2, y2))).copy()
    KINDS[obj.kind].draw(painter, rng, t, obj.options)
    after = np.asarray(painter.ids.crop((x1, y1, x2, y2)))
    mask = (after == painter.owner) & (before != painter.owner)
    area = int(mask.sum())
    if area == 0:
        return None
    obj.options["_area"] = area
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return (float(x1 + cols[0]), float(y1 + rows[0]), float(x1 + cols[-1] + 1), float(y1 + rows[-1] + 1))


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """JPEG bytes of a frame, as a camera or the stream simulator would send them."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def jpeg_quality(rng: np.random.Generator, settings: SceneSettings | str = "train") -> int:
    """A JPEG quality drawn from the settings' range."""
    lo, hi = resolve_settings(settings).jpeg_quality
    return int(rng.integers(lo, hi + 1))


# --------------------------------------------------------------------------------------------------------------------
# COCO data sets
# --------------------------------------------------------------------------------------------------------------------


def coco_categories(algorithm: str) -> list[dict]:
    """COCO categories of an algorithm: ids 1..n in the order of its classes (= the model's labels)."""
    algo = get_algorithm(algorithm)
    return [
        {"id": i, "name": c.name, "label_zh": c.label_zh, "supercategory": algo.name}
        for i, c in enumerate(algo.classes, start=1)
    ]


def generate_dataset(
    out_dir: Path,
    algorithm: str,
    images: int,
    seed: int,
    settings: SceneSettings | str = "train",
    size: tuple[int, int] = (640, 360),
) -> Path:
    """Write ``images`` frames as JPEGs under ``out_dir/images`` and their labels as ``out_dir/annotations.json``.

    Frame i is drawn from ``numpy.random.default_rng([seed, i])``: the same seed gives byte-identical files, and a
    held-out set is the same call with another seed. Returns the path of the annotations file.
    """
    resolved = resolve_settings(settings)
    out_dir = Path(out_dir)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    coco_images: list[dict] = []
    annotations: list[dict] = []
    category_ids = {c["name"]: c["id"] for c in coco_categories(algorithm)}
    for i in range(images):
        rng = np.random.default_rng([seed, i])
        frame, boxes, scene = draw_frame_with_scene(rng, algorithm, resolved, size)
        name = f"{i:06d}.jpg"
        quality = jpeg_quality(rng, resolved)
        (image_dir / name).write_bytes(encode_jpeg(frame, quality))
        scene["jpeg_quality"] = quality
        coco_images.append({"id": i + 1, "file_name": name, "width": size[0], "height": size[1], "scene": scene})
        for box in boxes:
            x1, y1, x2, y2 = box["bbox"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": category_ids[box["category"]],
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "area": round((x2 - x1) * (y2 - y1), 2),
                    "iscrowd": 0,
                    "visibility": box["visibility"],
                }
            )
    coco = {
        "info": {
            "description": f"yiwang procedural street scenes for {algorithm}",
            "algorithm": algorithm,
            "seed": seed,
            "generator_version": GENERATOR_VERSION,
            "settings": resolved.to_dict(),
        },
        "images": coco_images,
        "annotations": annotations,
        "categories": coco_categories(algorithm),
    }
    path = out_dir / "annotations.json"
    path.write_text(json.dumps(coco, ensure_ascii=False), encoding="utf-8")
    return path

"""SynthCity: a synthetic street-scene data set written in the exact Cityscapes layout.

Each scene is a street seen from a car, in one-point perspective: road and sidewalks
converge to a vanishing point on the horizon, building facades line both sides, and
cars, buses, trucks, people, poles, signs, traffic lights and trees stand on the ground
plane, scaled by their distance. The scene is built to make multi-scale inference matter:

- thin structures (poles, traffic signs, far people) are a few pixels wide: best seen at 2.0x;
- road and sidewalk share colour and texture, and buses and trucks share the building
  palette and window grids: telling them apart needs context (curb, wheels, position),
  which a 0.5x pass sees and a 1.0x pass of a near bus does not;
- every object class spans a wide range of sizes (near vs far, often well over 4x);
- illumination, texture and pixel noise mean a pixel's colour alone does not give its class.

Sizes are relative to the image: the same scene at twice the resolution is the same picture,
twice as sharp. ``zoom`` is the camera's focal length against the default one: at 2 every
object is drawn twice as large and the picture is the central quarter of the default view
(the scene is drawn at twice the size and cropped), so that detail the default camera puts
below a network's output stride reaches it at scale 1.0.

Coarse labels imitate Cityscapes' coarse annotation: rough polygons inside objects, a void
band (label id 0) along every boundary, and small objects left unlabelled. The fine ground
truth of the coarse-only ``train_extra`` images is written under ``heldout/`` so that
auto-label quality can be measured without it ever reaching training.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hmsa.data import cityscapes
from hmsa.runtime.jobs import run_jobs
from hmsa.data.labels import CITYSCAPES
from hmsa.io.files import is_stamped, rebuild_stamped

log = logging.getLogger(__name__)

#: bump when the drawing code changes, so that existing trees are regenerated
#: (4: pixel floors scale with the image width, ``zoom``; at 256x512 and zoom 1 as 3)
GENERATOR_VERSION = 4
STAMP_FILE = "synthcity.json"

_ID = {name: CITYSCAPES.label_id(name) for name in (
    "unlabeled", "ego vehicle", "road", "sidewalk", "building", "pole",
    "traffic light", "traffic sign", "vegetation", "terrain", "sky", "person", "car",
    "truck", "bus",
)}


class SynthCitySpec(BaseModel):
    """What to generate: image size, images and cities per split, and the seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    height: int = Field(256, ge=32, le=4096)
    width: int = Field(512, ge=32, le=8192)
    #: focal length against the default camera: objects ``zoom`` times as large, the central
    #: 1/zoom of the default view (see the module docstring)
    zoom: float = Field(1.0, ge=1.0, le=8.0)
    images: dict[str, int] = Field(
        default_factory=lambda: {"train": 200, "val": 50, "train_extra": 400}
    )
    cities: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "train": ["synthbach", "pixelburg", "rasterheim"],
            "val": ["voxelstadt"],
            "train_extra": ["noiseford", "texelton", "gradientz"],
        }
    )

    @model_validator(mode="after")
    def _check_splits(self) -> "SynthCitySpec":
        known = {"train": "fine", "val": "fine", "train_extra": "coarse"}
        for split, count in self.images.items():
            if split not in known:
                raise ValueError(
                    f"images.{split}: unknown split; SynthCity writes {sorted(known)}"
                )
            if count < 0:
                raise ValueError(f"images.{split} must be >= 0, got {count}")
            if count and not self.cities.get(split):
                raise ValueError(f"cities.{split} must list at least one city name")
            for city in self.cities.get(split, []):
                if not city or "_" in city or "/" in city:
                    raise ValueError(
                        f"cities.{split}: city name {city!r} must be non-empty, without '_' or '/'"
                    )
        return self

    def label_kind(self, split: str) -> str:
        """The label kind SynthCity writes for ``split``: fine, or coarse for train_extra."""
        return "coarse" if split == "train_extra" else "fine"


# --------------------------------------------------------------------------- drawing


@dataclass
class _Shape:
    label_id: int
    polygon: list[tuple[float, float]]


@dataclass
class _Canvas:
    """A label canvas and a colour canvas drawn together, plus the labelled shapes."""

    height: int
    width: int
    label: Image.Image = field(init=False)
    color: Image.Image = field(init=False)
    shapes: list[_Shape] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.label = Image.new("L", (self.width, self.height), _ID["sky"])
        self.color = Image.new("RGB", (self.width, self.height), (0, 0, 0))
        self._dl = ImageDraw.Draw(self.label)
        self._dc = ImageDraw.Draw(self.color)

    def poly(self, pts, label_name: str | None, rgb) -> None:
        """Fill a polygon; ``label_name=None`` paints colour only (texture)."""
        pts = [(float(x), float(y)) for x, y in pts]
        if label_name is not None:
            self._dl.polygon(pts, fill=_ID[label_name])
            self.shapes.append(_Shape(_ID[label_name], pts))
        self._dc.polygon(pts, fill=tuple(int(c) for c in rgb))

    def rect(self, x0, y0, x1, y1, label_name: str | None, rgb) -> None:
        """Axis-aligned rectangle; at least one pixel wide and tall."""
        x1 = max(x1, x0 + 1.0)
        y1 = max(y1, y0 + 1.0)
        # PIL's polygon fill includes the right/bottom edge: shave it to keep widths exact
        self.poly([(x0, y0), (x1 - 1, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], label_name, rgb)

    def blob(self, rng, cx, cy, rx, ry, label_name: str, rgb, n: int = 14) -> None:
        """An irregular closed shape (tree crowns, heads)."""
        angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
        radius = 1.0 + rng.uniform(-0.18, 0.18, size=n)
        pts = [(cx + rx * r * np.cos(a), cy + ry * r * np.sin(a)) for a, r in zip(angles, radius)]
        self.poly(pts, label_name, rgb)


@dataclass
class _Street:
    """One-point perspective: ground point at depth s (1 = bottom row) and lateral u."""

    height: int
    width: int
    horizon: float
    vp_x: float

    def ground(self, s: float, u: float) -> tuple[float, float]:
        return self.vp_x + s * u * self.width, self.horizon + s * (self.height - self.horizon)

    @property
    def px(self) -> float:
        """One pixel of the 512-wide default image at this drawing's size: the unit of the
        minimum sizes, so that the drawing scales with the resolution."""
        return self.width / 512

    def up(self, s: float, u: float, v: float) -> tuple[float, float]:
        """The point at height v (in image heights at s=1) above ground point (s, u)."""
        x, y = self.ground(s, u)
        return x, y - s * v * self.height


def _jitter(rng, rgb, amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, dtype=float) * rng.uniform(1 - amount, 1 + amount, 3), 0, 255)


_FACADE_PALETTE = np.array(
    [(150, 140, 125), (120, 115, 110), (160, 120, 95), (110, 120, 130), (175, 165, 145),
     (135, 100, 85), (95, 100, 105)], dtype=float,
)
_CAR_PALETTE = np.array(
    [(30, 30, 35), (200, 200, 205), (120, 20, 25), (25, 45, 110), (90, 90, 95), (170, 150, 60)],
    dtype=float,
)
_WINDOW = np.array((55, 65, 80), dtype=float)


def _facade_windows(canvas: _Canvas, rng, corner, rows: int, cols: int, rgb) -> None:
    """A grid of window panes on a quad given by ``corner(a, b)`` with a, b in [0, 1]."""
    for r in range(rows):
        for c in range(cols):
            a0, a1 = (c + 0.2) / cols, (c + 0.8) / cols
            b0, b1 = (r + 0.25) / rows, (r + 0.75) / rows
            pane = _jitter(rng, rgb, 0.15)
            canvas.poly([corner(a0, b0), corner(a1, b0), corner(a1, b1), corner(a0, b1)], None, pane)


def _draw_side(canvas: _Canvas, rng, st: _Street, side: int, road_u: float, extents) -> list[float]:
    """Sidewalk, optional terrain, facades and hedges on one side (side=-1 left, +1 right).

    Returns the lateral position of the curb line (road edge) and of the sidewalk middle.
    """
    walk_w, terrain_w, ground_rgb = extents
    curb_u = road_u
    facade_u = curb_u + side * (walk_w + terrain_w)
    far, near = 0.05, 4.0
    walk = [st.ground(0.0, 0), st.ground(near, curb_u), st.ground(near, curb_u + side * walk_w)]
    canvas.poly(walk, "sidewalk", _jitter(rng, ground_rgb, 0.03))
    # the curb: a lighter strip along the road edge, part of the sidewalk
    curb_rgb = np.clip(np.asarray(ground_rgb) * 1.25, 0, 255)
    canvas.poly(
        [st.ground(far, curb_u), st.ground(near, curb_u), st.ground(near, curb_u + side * 0.012),
         st.ground(far, curb_u + side * 0.012)], None, curb_rgb,
    )
    if terrain_w > 0:
        canvas.poly(
            [st.ground(0.0, 0), st.ground(near, curb_u + side * walk_w), st.ground(near, facade_u)],
            "terrain", _jitter(rng, (95, 125, 60), 0.12),
        )
    # facades: a row of buildings of varying height along the depth axis
    depth_edges = np.sort(1.0 / rng.uniform(1 / near, 1 / far, size=rng.integers(2, 6)))
    edges = [far, *depth_edges.tolist(), near]
    for s0, s1 in zip(edges[:-1], edges[1:]):
        tall = rng.uniform(0.5, 2.6)
        rgb = _jitter(rng, _FACADE_PALETTE[rng.integers(len(_FACADE_PALETTE))], 0.1)

        def corner(a, b, s0=s0, s1=s1, tall=tall):
            # a along depth (uniform in 1/s, i.e. in distance), b up the facade
            s = 1.0 / (1.0 / s0 + a * (1.0 / s1 - 1.0 / s0))
            return st.up(s, facade_u, b * tall)

        canvas.poly([corner(0, 0), corner(1, 0), corner(1, 1), corner(0, 1)], "building", rgb)
        floors = max(1, int(tall * rng.uniform(4, 7)))
        bays = max(1, int((1 / s0 - 1 / s1) * rng.uniform(0.6, 1.2)))
        _facade_windows(canvas, rng, corner, floors, min(bays, 40), _WINDOW)
        if rng.random() < 0.3:  # a hedge along the facade base
            hedge = rng.uniform(0.04, 0.12) / tall
            canvas.poly([corner(0, 0), corner(1, 0), corner(1, hedge), corner(0, hedge)],
                        "vegetation", _jitter(rng, (60, 100, 40), 0.15))
    return [curb_u, curb_u + side * walk_w * rng.uniform(0.15, 0.85)]


def _draw_tree(canvas: _Canvas, rng, st: _Street, s: float, u: float) -> None:
    tall = rng.uniform(0.5, 0.9)
    trunk_w = max(st.px, s * 0.012 * st.width)
    x, y = st.ground(s, u)
    top = st.up(s, u, tall * 0.6)
    canvas.rect(x - trunk_w / 2, top[1], x + trunk_w / 2, y, "vegetation", (70, 55, 40))
    crown = s * tall * 0.35 * st.height
    cx, cy = st.up(s, u, tall * 0.75)
    canvas.blob(rng, cx, cy, crown * rng.uniform(0.7, 1.1), crown * 0.8, "vegetation",
                _jitter(rng, (70, 110, 45), 0.2))


def _draw_pole(canvas: _Canvas, rng, st: _Street, s: float, u: float) -> None:
    """A pole 2-8 px wide (at 512 px image width), sometimes with a traffic sign or a traffic light on top."""
    tall = rng.uniform(0.55, 1.0)
    width = float(np.clip(round(s * 8 * st.px), round(2 * st.px), round(8 * st.px)))
    x, y = st.ground(s, u)
    _, top = st.up(s, u, tall)
    canvas.rect(x - width / 2, top, x + width / 2, y, "pole", _jitter(rng, (110, 110, 115), 0.1))
    kind = rng.random()
    size = max(3.0 * st.px, s * rng.uniform(0.035, 0.07) * st.height)
    if kind < 0.5:
        rgb = ((200, 30, 30), (30, 70, 170), (230, 200, 40))[rng.integers(3)]
        canvas.rect(x - size / 2, top - size, x + size / 2, top + 1, "traffic sign", _jitter(rng, rgb, 0.1))
    elif kind < 0.7:
        size = max(4.0 * st.px, s * rng.uniform(0.06, 0.1) * st.height)
        w = max(3.0 * st.px, size * 0.45)
        canvas.rect(x - w / 2, top - size * 1.4, x + w / 2, top + 1, "traffic light", (35, 35, 30))
        lamp = ((220, 40, 30), (240, 180, 30), (40, 200, 80))[rng.integers(3)]
        ly = top - size * 1.4 + rng.integers(3) * size * 0.45
        canvas.rect(x - w / 4, ly, x + w / 4, ly + max(st.px, size * 0.3), None, lamp)


def _draw_person(canvas: _Canvas, rng, st: _Street, s: float, u: float) -> None:
    tall = rng.uniform(0.28, 0.38)
    x, y = st.ground(s, u)
    _, head_y = st.up(s, u, tall)
    h = y - head_y
    body_w = max(2.0 * st.px, s * 0.025 * st.width)
    shirt = _jitter(rng, ((150, 40, 40), (40, 60, 120), (200, 190, 170), (50, 50, 50))[rng.integers(4)], 0.2)
    canvas.rect(x - body_w / 2, head_y + 0.15 * h, x + body_w / 2, y - 0.45 * h, "person", shirt)
    leg = max(st.px, body_w * 0.4)
    canvas.rect(x - body_w / 2, y - 0.45 * h, x - body_w / 2 + leg, y, "person", (40, 40, 50))
    canvas.rect(x + body_w / 2 - leg, y - 0.45 * h, x + body_w / 2, y, "person", (40, 40, 50))
    head = max(st.px, body_w * 0.45)
    canvas.blob(rng, x, head_y + 0.08 * h, head, 0.08 * h, "person", (200, 160, 130), n=8)


def _draw_vehicle(canvas: _Canvas, rng, st: _Street, kind: str, s: float, u: float) -> None:
    """A vehicle seen from behind: body, cabin or box, windows, wheels, lights."""
    dims = {"car": (0.22, 0.16), "bus": (0.32, 0.42), "truck": (0.30, 0.40)}
    width, tall = dims[kind]
    width *= rng.uniform(0.9, 1.1)
    x0, y = st.ground(s, u)
    x1, _ = st.ground(s, u + width)
    h = s * tall * st.height
    wheel_h = 0.14 * h if kind == "car" else 0.09 * h
    wheel_w = 0.14 * (x1 - x0)
    tyre = (20, 20, 22)
    for wx in (x0 + 0.04 * (x1 - x0), x1 - 0.04 * (x1 - x0) - wheel_w):
        canvas.rect(wx, y - wheel_h, wx + wheel_w, y, kind, tyre)
    if kind == "car":
        rgb = _jitter(rng, _CAR_PALETTE[rng.integers(len(_CAR_PALETTE))], 0.08)
        body_top = y - 0.55 * h
        canvas.rect(x0, body_top, x1, y - wheel_h * 0.6, "car", rgb)
        inset = 0.14 * (x1 - x0)
        canvas.poly([(x0 + inset * 0.4, body_top + 1), (x1 - inset * 0.4, body_top + 1),
                     (x1 - inset, y - h), (x0 + inset, y - h)], "car", rgb)
        glass = (x0 + inset * 0.9, y - 0.93 * h, x1 - inset * 0.9, body_top - 0.05 * h)
        canvas.rect(*glass, None, _jitter(rng, _WINDOW, 0.1))
        lamp_w = max(st.px, 0.12 * (x1 - x0))
        for lx in (x0 + 0.03 * (x1 - x0), x1 - 0.03 * (x1 - x0) - lamp_w):
            canvas.rect(lx, body_top + 0.1 * h, lx + lamp_w, body_top + 0.2 * h, None, (190, 25, 25))
        return
    # bus and truck bodies borrow the building palette and its window grid
    rgb = _jitter(rng, _FACADE_PALETTE[rng.integers(len(_FACADE_PALETTE))], 0.1)
    box_bottom = y - wheel_h * 0.6
    if kind == "bus":
        canvas.rect(x0, y - h, x1, box_bottom, "bus", rgb)

        def corner(a, b):
            return x0 + a * (x1 - x0), (y - 0.35 * h) - b * 0.6 * h

        _facade_windows(canvas, rng, corner, int(rng.integers(1, 3)), int(rng.integers(2, 5)), _WINDOW)
    else:
        canvas.rect(x0, y - h, x1, box_bottom, "truck", rgb)

        def corner(a, b):
            return x0 + a * (x1 - x0), (y - 0.2 * h) - b * 0.75 * h

        _facade_windows(canvas, rng, corner, int(rng.integers(2, 5)), int(rng.integers(1, 4)),
                        _jitter(rng, rgb, 0.25) * 0.7)
    lamp_w = max(st.px, 0.08 * (x1 - x0))
    for lx in (x0 + 0.04 * (x1 - x0), x1 - 0.04 * (x1 - x0) - lamp_w):
        canvas.rect(lx, y - 0.25 * h, lx + lamp_w, y - 0.2 * h, None, (200, 140, 30))


def _smooth_noise(rng, height: int, width: int, cells: tuple[int, int], channels: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a coarse random grid upsampled bilinearly."""
    grid = rng.uniform(-1, 1, size=(cells[0], cells[1], channels)).astype(np.float32)
    out = np.empty((height, width, channels), dtype=np.float32)
    for c in range(channels):
        img = Image.fromarray(np.ascontiguousarray(grid[:, :, c])).resize((width, height), Image.BILINEAR)
        out[:, :, c] = np.asarray(img)
    return out


@dataclass
class Scene:
    """One rendered scene: RGB image, fine label ids, and coarse label ids."""

    image: np.ndarray
    fine: np.ndarray
    coarse: np.ndarray


def render_scene(rng: np.random.Generator, height: int, width: int, zoom: float = 1.0) -> Scene:
    """Draw one street scene of ``height`` x ``width`` pixels through a camera of focal length
    ``zoom`` (1: the default view). Deterministic for a given generator state: the parts below
    draw from ``rng`` in a fixed order."""
    out_h, out_w = height, width
    height, width = round(out_h * zoom), round(out_w * zoom)  # the whole view, cropped at the end
    st = _Street(height, width, horizon=height * rng.uniform(0.36, 0.48), vp_x=width * rng.uniform(0.35, 0.65))
    canvas = _Canvas(height, width)
    road_l, road_r, ground_rgb = _draw_sky_and_road(canvas, rng, st)
    sides = {}
    for side, road_u in ((-1, road_l), (1, road_r)):
        walk = rng.uniform(0.12, 0.35)
        terrain = rng.uniform(0.04, 0.12) if rng.random() < 0.35 else 0.0
        sides[side] = _draw_side(canvas, rng, st, side, road_u, (walk, terrain, ground_rgb))
    # the far end of the street: a frontal block across the vanishing point
    far = 0.05
    block_l, block_r = road_l - 0.8, road_r + 0.8
    canvas.poly([st.ground(far, block_l), st.ground(far, block_r), st.up(far, block_r, 3.0), st.up(far, block_l, 3.0)],
                "building", _jitter(rng, _FACADE_PALETTE[rng.integers(len(_FACADE_PALETTE))], 0.1))
    for s, kind, u in _street_objects(rng, road_l, road_r, sides):  # far to near: near ones occlude far ones
        if kind in ("car", "bus", "truck"):
            _draw_vehicle(canvas, rng, st, kind, s, u)
        else:
            {"pole": _draw_pole, "person": _draw_person, "tree": _draw_tree}[kind](canvas, rng, st, s, u)
    return _framed(canvas, rng, (height, width), (out_h, out_w))


def _draw_sky_and_road(canvas: _Canvas, rng: np.random.Generator, st: _Street) -> tuple[float, float, np.ndarray]:
    """The sky (a gradient, through the colour image), the road and its dashed lane marking;
    returns the road's left and right edges and the ground colour."""
    height, width = canvas.height, canvas.width
    canvas.shapes.append(_Shape(_ID["sky"], [(0, 0), (width, 0), (width, st.horizon), (0, st.horizon)]))
    sky_top, sky_low = _jitter(rng, (95, 140, 200), 0.1), _jitter(rng, (185, 205, 225), 0.06)
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    sky = sky_top * (1 - ramp) + sky_low * ramp
    canvas.color.paste(Image.fromarray(np.broadcast_to(sky, (height, width, 3)).astype(np.uint8)))

    ground_rgb = np.full(3, rng.uniform(85, 140)) * rng.uniform(0.95, 1.05, 3)
    road_l, road_r = -rng.uniform(0.22, 0.5), rng.uniform(0.22, 0.5)
    near = 4.0
    canvas.poly([st.ground(0.0, 0), st.ground(near, road_l), st.ground(near, road_r)], "road",
                _jitter(rng, ground_rgb, 0.03))
    # dashed lane marking: road texture, not a class
    lane_u = (road_l + road_r) / 2
    for z in np.arange(1.0, 25.0, 2.0):
        s0, s1 = 1.0 / (z + 0.8), 1.0 / z
        canvas.poly([st.ground(s0, lane_u - 0.006), st.ground(s1, lane_u - 0.006),
                     st.ground(s1, lane_u + 0.006), st.ground(s0, lane_u + 0.006)], None, (215, 215, 205))
    return road_l, road_r, ground_rgb


def _street_objects(rng: np.random.Generator, road_l: float, road_r: float,
                    sides: dict[int, tuple[float, float]]) -> list[tuple[float, str, float]]:
    """Vehicles on the road and poles, people and trees on each side, as (depth, kind, lateral
    position), sorted far to near."""
    objects: list[tuple[float, str, float]] = []
    for _ in range(rng.integers(2, 8)):
        objects.append((rng.uniform(0.08, 1.0), "car", rng.uniform(road_l + 0.02, road_r - 0.24)))
    for kind in ("bus", "truck"):
        for _ in range(rng.binomial(2, 0.35)):
            objects.append((rng.uniform(0.15, 1.1), kind, rng.uniform(road_l + 0.02, road_r - 0.33)))
    for side in (-1, 1):
        curb_u, walk_mid = sides[side]
        for _ in range(rng.integers(2, 7)):
            objects.append((rng.uniform(0.08, 1.2), "pole", curb_u + side * 0.02))
        for _ in range(rng.integers(1, 6)):
            objects.append((rng.uniform(0.1, 1.1), "person", walk_mid + side * rng.uniform(-0.05, 0.05)))
        for _ in range(rng.integers(0, 3)):
            objects.append((rng.uniform(0.1, 0.9), "tree", walk_mid + side * 0.04))
    objects.sort(key=lambda o: o[0])
    return objects


def _framed(canvas: _Canvas, rng: np.random.Generator, view: tuple[int, int], out: tuple[int, int]) -> Scene:
    """The picture cropped out of the whole view (all of it at zoom 1), sometimes with the ego
    vehicle's bonnet at the bottom as in Cityscapes frames; its fine and coarse labels."""
    (height, width), (out_h, out_w) = view, out
    left, top = (width - out_w) // 2, (height - out_h) // 2
    if rng.random() < 0.3:
        y = top + out_h * rng.uniform(0.88, 0.95)
        x0, x1, y1 = left, left + out_w, top + out_h
        canvas.poly([(x0 - 1, y1), (x0 - 1, y + 4), (x0 + out_w * 0.3, y), (x0 + out_w * 0.7, y), (x1, y + 4), (x1, y1)],
                    "ego vehicle", (25, 25, 28))
    box = (left, top, left + out_w, top + out_h)
    image = _finish_image(rng, canvas.color.crop(box))
    fine = np.asarray(canvas.label.crop(box), dtype=np.uint8).copy()
    shapes = canvas.shapes if box == (0, 0, width, height) else [
        _Shape(sh.label_id, [(x - left, y - top) for x, y in sh.polygon]) for sh in canvas.shapes]
    coarse = coarse_from_fine(rng, fine, shapes)
    return Scene(image, fine, coarse)


def _finish_image(rng, color: Image.Image) -> np.ndarray:
    """Blur slightly, then add illumination, texture and pixel noise."""
    height, width = color.height, color.width
    img = np.asarray(color.filter(ImageFilter.GaussianBlur(0.6)), dtype=np.float32)
    light = 1.0 + 0.22 * _smooth_noise(rng, height, width, (3, 5), 1)
    texture = 14.0 * _smooth_noise(rng, height, width, (max(2, height // 6), max(2, width // 6)), 1)
    img = img * light * rng.uniform(0.9, 1.1, 3).astype(np.float32) + texture
    img += rng.normal(0.0, rng.uniform(6, 11), size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def boundary_band(labels: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` (chessboard distance) of a pixel of another label."""
    band = np.zeros(labels.shape, dtype=bool)
    for k in range(1, radius + 1):
        diff = labels[:, k:] != labels[:, :-k]
        band[:, k:] |= diff
        band[:, :-k] |= diff
    grown = band.copy()
    for k in range(1, radius + 1):  # grow vertically too: a square neighbourhood
        diff = labels[k:, :] != labels[:-k, :]
        grown[k:, :] |= diff | band[:-k, :]
        grown[:-k, :] |= diff | band[k:, :]
    return grown


def clip_polygon(pts: np.ndarray, width: float, height: float) -> np.ndarray:
    """Clip a polygon to the rectangle [0, width] x [0, height] (Sutherland-Hodgman)."""
    def clip(poly: list, inside, cross) -> list:
        out = []
        for i, cur in enumerate(poly):
            prev = poly[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(cross(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(cross(prev, cur))
        return out

    def at_x(x):
        return lambda p, q: (x, p[1] + (q[1] - p[1]) * (x - p[0]) / (q[0] - p[0]))

    def at_y(y):
        return lambda p, q: (p[0] + (q[0] - p[0]) * (y - p[1]) / (q[1] - p[1]), y)

    poly = [tuple(p) for p in np.asarray(pts, dtype=float)]
    for inside, cross in (
        (lambda p: p[0] >= 0, at_x(0.0)), (lambda p: p[0] <= width, at_x(float(width))),
        (lambda p: p[1] >= 0, at_y(0.0)), (lambda p: p[1] <= height, at_y(float(height))),
    ):
        if not poly:
            break
        poly = clip(poly, inside, cross)
    return np.asarray(poly, dtype=float).reshape(-1, 2)


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def coarse_from_fine(rng, fine: np.ndarray, shapes: list[_Shape]) -> np.ndarray:
    """Coarse label ids in the manner of Cityscapes' coarse annotation.

    Each labelled shape large enough to annotate (most of them; small or thin ones never:
    a coarse annotator does not trace a pole) gets a rough polygon: its outline clipped to
    the image, shrunk towards its centre and jittered. A pixel keeps its label only inside
    its own shape's rough polygon and away from every boundary; everything else is void
    (label id 0).
    """
    height, width = fine.shape
    min_area = 0.0015 * height * width
    min_side = 0.02 * width
    rough = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(rough)
    for shape in shapes:
        pts = clip_polygon(shape.polygon, width - 1, height - 1)
        if len(pts) < 3 or _polygon_area(pts) < min_area or rng.random() < 0.1:
            continue
        if min(np.ptp(pts, axis=0)) < min_side:
            continue
        centre = pts.mean(axis=0)
        shrink = rng.uniform(0.86, 0.97)
        pts = centre + (pts - centre) * shrink
        pts += rng.normal(0, 0.006 * height, size=pts.shape)
        draw.polygon([tuple(p) for p in pts], fill=shape.label_id)
    rough_ids = np.asarray(rough, dtype=np.uint8)
    keep = (rough_ids == fine) & ~boundary_band(fine, max(2, round(0.012 * height)))
    return np.where(keep, fine, _ID["unlabeled"]).astype(np.uint8)


# --------------------------------------------------------------------------- writing


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1)


def _write_one(args: tuple[Path, SynthCitySpec, str, int, int, str, int]) -> None:
    root, spec, split, split_index, index, city, seq = args
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, split_index, index]))
    scene = render_scene(rng, spec.height, spec.width, spec.zoom)
    stem = cityscapes.image_id(city, seq, 19)
    _save_png(scene.image, root / cityscapes.image_relpath(split, city, stem))
    kind = spec.label_kind(split)
    if kind == "coarse":
        _save_png(scene.coarse, root / cityscapes.label_relpath("coarse", split, city, stem))
        _save_png(scene.fine, root / cityscapes.heldout_relpath(split, city, stem))
    else:
        _save_png(scene.fine, root / cityscapes.label_relpath("fine", split, city, stem))


def _jobs(root: Path, spec: SynthCitySpec):
    """One job per image; images are spread over the split's cities in contiguous blocks."""
    for split_index, (split, count) in enumerate(sorted(spec.images.items())):
        cities = spec.cities.get(split, [])
        seq_in_city = dict.fromkeys(cities, 0)
        for index in range(count):
            city = cities[index * len(cities) // count]
            yield (root, spec, split, split_index, index, city, seq_in_city[city])
            seq_in_city[city] += 1


def generate(root: Path, spec: SynthCitySpec, workers: int = 1) -> int:
    """Write the whole data set under ``root`` (absent or empty); returns images written."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty: SynthCity is generated into a new or empty folder")
    jobs = list(_jobs(root, spec))
    run_jobs(_write_one, jobs, workers)
    return len(jobs)


def _stamp(spec: SynthCitySpec) -> dict:
    return {"generator_version": GENERATOR_VERSION, "spec": spec.model_dump()}


def is_current(root: Path, spec: SynthCitySpec) -> bool:
    """True when ``root`` holds a complete SynthCity tree generated from ``spec``."""
    return is_stamped(root, STAMP_FILE, _stamp(spec))


def ensure_generated(root: Path, spec: SynthCitySpec, workers: int = 1) -> bool:
    """Generate SynthCity into ``root`` unless it is already there with the same spec.

    The tree is written to a temporary sibling folder and swapped in only when complete,
    so an interrupted generation never leaves a half-written tree, and the previous tree
    stays until the new one is whole. Returns True when it generated.
    """
    start = time.perf_counter()
    built, count = rebuild_stamped(root, STAMP_FILE, _stamp(spec), lambda tmp: generate(tmp, spec, workers),
                                   "a SynthCity tree", "paths.synthcity")
    if not built:
        log.info("SynthCity at %s is up to date", root)
        return False
    seconds = time.perf_counter() - start
    log.info("Generated SynthCity: %d images in %.1f s (%.1f images/s) into %s",
             count, seconds, count / max(seconds, 1e-9), root)
    return True

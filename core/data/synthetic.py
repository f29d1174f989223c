"""The built-in "captioned scenes" dataset: simple drawings with five correct, differently worded captions.

Each 128x128 scene has 1-3 objects (shape, colour, size) on a coloured background. Objects sit in the
cells of a 3x3 grid (several objects always in distinct columns, so "left of" is never ambiguous). About a
quarter of the scenes are one-attribute mutations of an earlier scene (another colour, shape or size of
one object, or another background): near-duplicates that only a model reading every word can tell apart.
Mutations are made from original scenes only, and no two scenes are the same drawing up to a pixel or
two of jitter. Everything follows from the seed; the same seed gives byte-identical PNGs and captions.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image, ImageDraw

IMAGE_SIZE = 128
GENERATOR_VERSION = 1
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "grey": (128, 128, 128),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star")
RADIUS = {"small": 11, "large": 19}
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
SHAPE_WORDS = {
    "circle": ("circle", "disc"),
    "square": ("square",),
    "triangle": ("triangle",),
    "star": ("star",),
}
BG_WORDS = {"white": ("white",), "grey": ("grey", "gray"), "black": ("black",)}
MUTATION_RATE = 0.25
N_OBJECTS_WEIGHTS = (0.25, 0.4, 0.35)
_CELL = IMAGE_SIZE / 3
_JITTER = 2

# Templates per object count. {A}/{B}/{C}: objects from left to right ("a large red circle");
# {bg}: background colour word; {where}: position of a single object; {size}/{color}/{shape}: its words.
TEMPLATES: dict[int, tuple[str, ...]] = {
    1: (
        "{A} {where} on a {bg} background",
        "{A} on a {bg} background",
        "one {size} {color} {shape} {where}, {bg} background",
        "a {bg} picture showing {A} {where}",
        "there is {A} {where}",
        "a single {color} {shape}, {size}, {where} on {bg}",
    ),
    2: (
        "{A} to the left of {B}",
        "{B} to the right of {A}",
        "two shapes on a {bg} background: {A} and {B}",
        "{A} on the left and {B} on the right, {bg} background",
        "a {bg} background with {A} left of {B}",
        "{A} next to {B} on {bg}",
    ),
    3: (
        "three shapes on a {bg} background: {A}, {B} and {C}",
        "from left to right: {A}, {B} and {C}",
        "{A} to the left of {B}, with {C} on the right",
        "{B} between {A} and {C}",
        "a {bg} scene with {C} on the right, {A} on the left and {B} in the middle",
        "{A}, {B} and {C} in a row on {bg}",
    ),
}


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    row: int
    col: int
    dx: int
    dy: int

    @property
    def center(self) -> tuple[int, int]:
        return (round((self.col + 0.5) * _CELL) + self.dx, round((self.row + 0.5) * _CELL) + self.dy)

    @property
    def radius(self) -> int:
        return RADIUS[self.size]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.size, self.color, self.shape)


@dataclass(frozen=True)
class Scene:
    """What a synthetic image shows; objects are ordered left to right."""

    id: str
    background: str
    objects: tuple[SceneObject, ...]
    mutation_of: str | None = None
    mutated: str | None = None
    captions: tuple[str, ...] = ()

    @property
    def signature(self) -> tuple[object, ...]:
        """What the captions can tell apart (jitter aside): two scenes never share it."""
        return (self.background, tuple((o.key, o.row, o.col) for o in self.objects))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "background": self.background,
            "objects": [
                {
                    "shape": o.shape,
                    "color": o.color,
                    "size": o.size,
                    "row": ROWS[o.row],
                    "col": COLS[o.col],
                    "center": list(o.center),
                    "radius": o.radius,
                }
                for o in self.objects
            ],
            "mutation_of": self.mutation_of,
            "mutated": self.mutated,
        }


def where_phrase(row: int, col: int) -> str:
    """Where a lone object sits: "in the top left corner", "at the top", "in the center", ..."""
    if row != 1 and col != 1:
        return f"in the {ROWS[row]} {COLS[col]} corner"
    if row != 1:
        return f"at the {ROWS[row]}"
    return "in the center" if col == 1 else f"on the {COLS[col]}"


def _new_scene(rng: random.Random, scene_id: str) -> Scene:
    n = rng.choices((1, 2, 3), weights=N_OBJECTS_WEIGHTS)[0]
    if n == 1:
        cells = [(rng.randrange(3), rng.randrange(3))]
    else:
        cells = [(rng.randrange(3), col) for col in sorted(rng.sample(range(3), n))]
    objects: list[SceneObject] = []
    for row, col in cells:
        while True:
            obj = SceneObject(
                shape=rng.choice(SHAPES),
                color=rng.choice(list(COLORS)),
                size=rng.choice(list(RADIUS)),
                row=row,
                col=col,
                dx=rng.randint(-_JITTER, _JITTER),
                dy=rng.randint(-_JITTER, _JITTER),
            )
            if all(obj.key != o.key for o in objects):
                break
        objects.append(obj)
    return Scene(scene_id, rng.choice(list(BACKGROUNDS)), tuple(objects))


def _mutate(rng: random.Random, base: Scene, scene_id: str) -> Scene | None:
    """``base`` with exactly one attribute changed, or ``None`` if the change made two objects alike."""
    attr = rng.choice(("background", "color", "shape", "size"))
    if attr == "background":
        bg = rng.choice([b for b in BACKGROUNDS if b != base.background])
        return Scene(scene_id, bg, base.objects, base.id, "background")
    i = rng.randrange(len(base.objects))
    obj = base.objects[i]
    if attr == "color":
        obj = replace(obj, color=rng.choice([c for c in COLORS if c != obj.color]))
    elif attr == "shape":
        obj = replace(obj, shape=rng.choice([s for s in SHAPES if s != obj.shape]))
    else:
        obj = replace(obj, size="small" if obj.size == "large" else "large")
    objects = base.objects[:i] + (obj,) + base.objects[i + 1 :]
    if len({o.key for o in objects}) < len(objects):
        return None
    return Scene(scene_id, base.background, objects, base.id, f"{attr} of object {i + 1}")


def _object_phrase(rng: random.Random, obj: SceneObject) -> str:
    return f"a {rng.choice(SIZE_WORDS[obj.size])} {obj.color} {rng.choice(SHAPE_WORDS[obj.shape])}"


def make_captions(rng: random.Random, scene: Scene, k: int = 5) -> tuple[str, ...]:
    """``k`` distinct captions, each from a different template, with random synonyms."""
    objs = scene.objects
    captions: list[str] = []
    for template in rng.sample(TEMPLATES[len(objs)], k):
        while True:
            words = dict(zip("ABC", (_object_phrase(rng, o) for o in objs), strict=False))
            words["bg"] = rng.choice(BG_WORDS[scene.background])
            first = objs[0]
            words.update(
                where=where_phrase(first.row, first.col),
                size=rng.choice(SIZE_WORDS[first.size]),
                color=first.color,
                shape=rng.choice(SHAPE_WORDS[first.shape]),
            )
            text = template.format(**words)
            if text not in captions:
                break
        captions.append(text)
    return tuple(captions)


def _polygon(obj: SceneObject) -> list[tuple[float, float]]:
    cx, cy = obj.center
    r = obj.radius
    if obj.shape == "triangle":
        return [(cx, cy - r), (cx - 0.95 * r, cy + 0.75 * r), (cx + 0.95 * r, cy + 0.75 * r)]
    points = []
    for k in range(10):
        rad = r if k % 2 == 0 else 0.45 * r
        angle = -math.pi / 2 + k * math.pi / 5
        points.append((cx + rad * math.cos(angle), cy + rad * math.sin(angle)))
    return points


def render(scene: Scene) -> Image.Image:
    """Draw the scene (no anti-aliasing: every object pixel has exactly its named colour)."""
    im = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(im)
    for obj in scene.objects:
        cx, cy = obj.center
        r = obj.radius
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif obj.shape == "square":
            h = round(0.85 * r)
            draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
        else:
            draw.polygon(_polygon(obj), fill=fill)
    return im


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def generate(n: int, seed: int) -> list[Scene]:
    """``n`` scenes with captions, deterministic in ``seed`` (a prefix of a longer run with the same seed)."""
    rng = random.Random(seed)
    width = max(4, len(str(n - 1)))
    scenes: list[Scene] = []
    originals: list[Scene] = []
    seen: set[tuple[object, ...]] = set()
    for i in range(n):
        scene_id = f"scene_{i:0{width}d}"
        scene = None
        if originals and rng.random() < MUTATION_RATE:
            scene = _mutate(rng, rng.choice(originals), scene_id)
        while scene is None or scene.signature in seen:
            scene = _new_scene(rng, scene_id)
        if scene.mutation_of is None:
            originals.append(scene)
        seen.add(scene.signature)
        scenes.append(replace(scene, captions=make_captions(rng, scene)))
    return scenes

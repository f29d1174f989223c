"""The synthetic captioned scenes: determinism, captions that match the drawn scene, near-duplicates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import synthetic
from core.data.prepare import prepare_synthetic
from core.data.synthetic import BACKGROUNDS, COLORS, Scene, SceneObject, generate, render, where_phrase

SCENES = generate(300, seed=0)
SIZE_OF = {w: size for size, words in synthetic.SIZE_WORDS.items() for w in words}
SHAPE_OF = {w: shape for shape, words in synthetic.SHAPE_WORDS.items() for w in words}
BG_OF = {w: bg for bg, words in synthetic.BG_WORDS.items() for w in words}
PHRASE = re.compile(
    rf"\b({'|'.join(SIZE_OF)}) ({'|'.join(COLORS)}) ({'|'.join(SHAPE_OF)})\b"
)  # "a large red circle"
AREA = {
    "circle": np.pi,
    "square": (2 * 0.85) ** 2,
    "triangle": 0.95 * 1.75,
    "star": 5 * 0.45 * np.sin(np.pi / 5),
}


def _phrases(caption: str) -> list[tuple[str, str, str]]:
    return [(SIZE_OF[s], c, SHAPE_OF[h]) for s, c, h in PHRASE.findall(caption)]


def test_generation_is_deterministic_and_seeded() -> None:
    assert generate(40, seed=0) == SCENES[:40]  # a shorter run is a prefix of a longer one
    assert generate(40, seed=1) != SCENES[:40]
    assert synthetic.png_bytes(render(SCENES[5])) == synthetic.png_bytes(render(generate(6, seed=0)[5]))


def test_scene_space_is_varied() -> None:
    assert {len(s.objects) for s in SCENES} == {1, 2, 3}
    objects = [o for s in SCENES for o in s.objects]
    assert {o.shape for o in objects} == set(synthetic.SHAPES)
    assert {o.color for o in objects} == set(COLORS)
    assert {o.size for o in objects} == {"small", "large"}
    assert {s.background for s in SCENES} == set(BACKGROUNDS)
    assert len({s.signature for s in SCENES}) == len(SCENES)  # no two scenes are the same drawing
    for s in SCENES:
        assert len(set(s.captions)) == 5
        assert [o.col for o in s.objects] == sorted(o.col for o in s.objects)
        if len(s.objects) > 1:
            assert len({o.col for o in s.objects}) == len(s.objects)


def test_near_duplicates_differ_in_exactly_one_attribute() -> None:
    by_id = {s.id: s for s in SCENES}
    mutants = [s for s in SCENES if s.mutation_of]
    assert len(mutants) > 0.15 * len(SCENES)
    for m in mutants:
        base = by_id[m.mutation_of]
        diffs = int(m.background != base.background)
        for a, b in zip(m.objects, base.objects, strict=True):
            diffs += (a.shape != b.shape) + (a.color != b.color) + (a.size != b.size)
            assert (a.row, a.col, a.dx, a.dy) == (b.row, b.col, b.dx, b.dy)
        assert diffs == 1, (m, base)
        assert m.mutated and (m.mutated == "background") == (m.background != base.background)


WHERE = {where_phrase(r, c) for r in range(3) for c in range(3)}


def _check_caption(scene: Scene, caption: str) -> None:
    objs = [o.key for o in scene.objects]
    found = _phrases(caption)
    words = [w.strip(",:") for w in caption.split()]
    if caption.startswith("a single "):  # "a single red circle, large, ...": size apart from the rest
        (obj,) = scene.objects
        assert f"{obj.color} " in caption and any(SHAPE_OF.get(w) == obj.shape for w in words), caption
        assert any(SIZE_OF.get(w) == obj.size for w in words), caption
    else:
        assert sorted(found) == sorted(objs), (caption, objs)
    assert all(BG_OF[w] == scene.background for w in words if w in BG_OF), caption
    if len(objs) == 1:
        obj = scene.objects[0]
        assert [p for p in WHERE if p in caption] in ([], [where_phrase(obj.row, obj.col)]), caption
    if " left of " in caption:  # "{A} to the left of {B}", "... with {A} left of {B}"
        assert objs.index(found[0]) < objs.index(found[1]), caption
    if " to the right of " in caption:
        assert objs.index(found[0]) > objs.index(found[1]), caption
    if caption.startswith("from left to right") or " in a row" in caption:
        assert found == objs, caption
    if " on the left and " in caption and len(objs) == 2:  # "{A} on the left and {B} on the right"
        assert found == objs, caption
    if " between " in caption:
        assert found[0] == objs[1] and {found[1], found[2]} == {objs[0], objs[2]}, caption
    if " in the middle" in caption:  # "... with {C} on the right, {A} on the left and {B} in the middle"
        assert found == [objs[2], objs[0], objs[1]], caption
    if caption.startswith(("two shapes", "three shapes")):
        assert caption.startswith({2: "two", 3: "three"}[len(objs)]), caption


def test_captions_describe_the_scene_metadata() -> None:
    for scene in SCENES:
        for caption in scene.captions:
            _check_caption(scene, caption)


def _object_pixels(arr: np.ndarray, obj: SceneObject) -> int:
    cx, cy = obj.center
    r = obj.radius
    box = arr[cy - r : cy + r + 1, cx - r : cx + r + 1]
    return int(np.all(box == COLORS[obj.color], axis=-1).sum())


def test_pixels_match_the_scene() -> None:
    for scene in SCENES[:120]:
        arr = np.asarray(render(scene))
        assert arr.shape == (128, 128, 3)
        assert tuple(arr[0, 0]) == BACKGROUNDS[scene.background]
        for obj in scene.objects:
            cx, cy = obj.center
            assert tuple(arr[cy, cx]) == COLORS[obj.color], (scene.id, obj)
            expected = AREA[obj.shape] * obj.radius**2
            assert abs(_object_pixels(arr, obj) - expected) < 0.3 * expected, (scene.id, obj)


def test_prepare_synthetic_writes_a_deterministic_dataset(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    ds = prepare_synthetic(n=200, seed=3, out=out)
    assert ds.meta["split_scheme"] == "random" and ds.meta["seed"] == 3 and ds.meta["problems"] == 0
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [140, 30, 30]
    assert ds.meta["captions"] == 1000 and ds.root == out / "images"
    scenes = {row["id"]: row for row in map(json.loads, (out / "scenes.jsonl").read_text().splitlines())}
    rec = ds.split("test")[0]
    with Image.open(ds.image_path(rec)) as im:
        assert im.size == (128, 128) and im.format == "PNG"
        center = scenes[rec.id]["objects"][0]["center"]
        assert im.convert("RGB").getpixel(tuple(center)) == COLORS[scenes[rec.id]["objects"][0]["color"]]
    snapshot = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()}
    prepare_synthetic(n=200, seed=3, out=out)
    assert {
        p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()
    }.keys() == (snapshot.keys())
    assert all(p.read_bytes() == snapshot[p][0] for p in snapshot)
    images_before = {p: snapshot[p][1] for p in snapshot if p.parent.name == "images"}
    assert all(p.stat().st_mtime_ns == t for p, t in images_before.items())  # unchanged images not rewritten


def test_prepare_synthetic_replaces_images_when_the_seed_changes(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    prepare_synthetic(n=30, seed=0, out=out)
    ds = prepare_synthetic(n=20, seed=1, out=out)
    assert len(list((out / "images").iterdir())) == 20
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert ds.fingerprint != prepare_synthetic(n=20, seed=2, out=tmp_path / "other").fingerprint


@pytest.mark.parametrize("n", [0, -3])
def test_prepare_synthetic_rejects_bad_n(n: int, tmp_path: Path) -> None:
    from core.errors import DatasetError

    with pytest.raises(DatasetError, match="at least 1"):
        prepare_synthetic(n=n, out=tmp_path / "x")

"""ShapeWorld generator: determinism, tight boxes, the base/novel split, truthful captions, the CLI."""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from ovdet.data.shapeworld import (
    COLORS,
    DRAWN,
    SceneConfig,
    load_split,
    object_alone,
    render_scene,
)
from ovdet.data.shapeworld_captions import NUMBER_WORDS, describe_objects, plural, scene_captions
from ovdet.data.shapeworld_dataset import object_crops, write_dataset
from ovdet.data.shapeworld_shapes import SHAPES, STYLES

REPO = Path(__file__).resolve().parents[1]
SMALL = SceneConfig(min_size=112, max_size=160)  # small images keep the many-scene tests fast


def _box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _mentioned(caption: str) -> Counter:
    """Shape names in a caption; word boundaries keep 'circle' out of 'semicircle'."""
    found = Counter()
    for shape in SHAPES:
        found[shape] = len(re.findall(rf"\b({shape}|{plural(shape)})\b", caption))
    return +found


def _write(tmp_path: Path, name: str, **kwargs) -> Path:
    out = tmp_path / name
    write_dataset(out, kwargs.pop("num_images", 6), kwargs.pop("seed", 11), progress=False, **kwargs)
    return out


def test_same_seed_same_pixels_and_scene_different_seed_differs():
    image_a, scene_a = render_scene((5, 3))
    image_b, scene_b = render_scene((5, 3))
    assert image_a.tobytes() == image_b.tobytes()
    assert asdict(scene_a) == asdict(scene_b)
    image_c, scene_c = render_scene((5, 4))
    assert image_a.tobytes() != image_c.tobytes() and asdict(scene_a) != asdict(scene_c)


def test_same_seed_writes_byte_identical_dataset(tmp_path):
    a = _write(tmp_path, "a", crops_per_image=1)
    b = _write(tmp_path, "b", crops_per_image=1, workers=2)  # processes must not change a byte
    for name in ("instances.json", "captions.jsonl", "crops.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    images = sorted(p.name for p in (a / "images").iterdir())
    assert len(images) == 6
    for name in images:
        assert (a / "images" / name).read_bytes() == (b / "images" / name).read_bytes(), name
    c = _write(tmp_path, "c", seed=12)
    assert (a / "instances.json").read_bytes() != (c / "instances.json").read_bytes()


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_boxes_are_tight_around_each_objects_visible_pixels(seed):
    """Re-render every object alone, redo the occlusion by hand, and compare boxes and pixels."""
    image, scene = render_scene((seed, 0), SceneConfig(min_objects=5))
    pixels = np.asarray(image, dtype=np.float32)  # [H, W, 3]
    alone = [object_alone(o, scene.width, scene.height) for o in scene.objects]  # each [H, W]
    assert len(scene.objects) >= 2
    for i, obj in enumerate(scene.objects):
        visible = alone[i].copy()
        for later in alone[i + 1 :]:
            visible *= 1.0 - later
        assert obj.box_xyxy == _box_of(visible >= DRAWN), obj
        x0, y0, x1, y1 = _box_of(alone[i] >= DRAWN)  # occlusion only ever shrinks the box
        assert x0 <= obj.box_xyxy[0] and y0 <= obj.box_xyxy[1] and obj.box_xyxy[2] <= x1 and obj.box_xyxy[3] <= y1
        assert obj.visible >= SceneConfig().min_visible - 1e-3
        shown = alone[i].copy()  # what of object i was visible when each later object was drawn
        for j in range(i + 1, len(alone)):  # an object never lands on a visible one of its own colour
            if scene.objects[j].color == obj.color:
                assert not (shown * alone[j]).any(), (obj, scene.objects[j])
            shown *= 1.0 - alone[j]
        inside = visible > 0.999  # fully covered, unhidden pixels show the object's own colour
        if inside.sum() >= 4:
            assert np.abs(pixels[inside] - np.array(obj.rgb)).mean() < 5.0, obj


def test_every_shape_colour_size_and_style_appears_and_both_orientations():
    shapes, colors, sizes, styles, counts, landscape = Counter(), Counter(), Counter(), Counter(), Counter(), 0
    for i in range(200):
        image, scene = render_scene((99, i), SMALL)
        landscape += scene.width > scene.height
        counts[len(scene.objects)] += 1
        for obj in scene.objects:
            shapes[obj.shape] += 1
            colors[obj.color] += 1
            sizes[obj.size] += 1
            styles[obj.style] += 1
    assert set(shapes) == set(SHAPES) and len(SHAPES) == 16
    assert len(colors) >= 10 and set(colors) <= set(COLORS)
    assert set(sizes) == {"small", "medium", "large"} and set(styles) == set(STYLES)
    assert min(counts) == 1 and max(counts) >= 6 and 40 < landscape < 160


def test_split_is_twelve_base_four_novel_and_yaml_agrees_with_packaged_json():
    split = load_split()
    assert len(split.base) == 12 and len(split.novel) == 4
    assert set(split.base) | set(split.novel) == set(SHAPES) and not set(split.base) & set(split.novel)
    data = yaml.safe_load((REPO / "conf" / "shapeworld" / "split.yaml").read_text())
    assert data["base"] == list(split.base) and data["novel"] == list(split.novel)
    assert load_split(REPO / "conf" / "shapeworld" / "split.yaml") == split


def test_training_json_boxes_only_base_while_images_hold_novel_shapes(tmp_path):
    train = _write(tmp_path, "train", num_images=16, annotate="base")
    val = _write(tmp_path, "val", num_images=16, annotate="all")
    train_coco = json.loads((train / "instances.json").read_text())
    val_coco = json.loads((val / "instances.json").read_text())
    split_of = {c["id"]: c["split"] for c in val_coco["categories"]}
    assert train_coco["categories"] == val_coco["categories"]
    assert Counter(c["split"] for c in val_coco["categories"]) == {"base": 12, "novel": 4}
    assert all(split_of[a["category_id"]] == "base" for a in train_coco["annotations"])
    novel_in_val = [a for a in val_coco["annotations"] if split_of[a["category_id"]] == "novel"]
    assert novel_in_val  # the same pixels hold novel shapes, only unannotated in training
    base_in_val = [a for a in val_coco["annotations"] if split_of[a["category_id"]] == "base"]
    assert len(train_coco["annotations"]) == len(base_in_val)
    for name in ("000000.png", "000015.png"):
        assert (train / "images" / name).read_bytes() == (val / "images" / name).read_bytes()
    annotation = val_coco["annotations"][0]
    assert set(annotation["attributes"]) == {"color", "size", "style"} and annotation["iscrowd"] == 0
    x, y, w, h = annotation["bbox"]
    image = val_coco["images"][annotation["image_id"] - 1]
    assert w > 0 and h > 0 and x + w <= image["width"] and y + h <= image["height"]


def test_captions_mention_exactly_the_drawn_shapes_with_counts():
    rng = np.random.default_rng(0)
    for i in range(60):
        _, scene = render_scene((7, i), SMALL)
        drawn = Counter(o.shape for o in scene.objects)
        captions = scene_captions(scene, rng, num=6)
        assert len(captions) == 6
        assert set(_mentioned(captions[0])) == set(drawn), (captions[0], drawn)
        for caption in captions:
            assert set(_mentioned(caption)) <= set(drawn), (caption, drawn)
        listed = describe_objects(scene.objects, fields=())  # shape names only: counts are exact
        for shape, count in drawn.items():
            name = shape if count == 1 else f"{NUMBER_WORDS[count]} {plural(shape)}"
            assert re.search(rf"(^|, | and )(an? )?{name}\b", listed), (listed, drawn)


def test_object_crops_hold_their_object_and_name_it():
    image, scene = render_scene((3, 1), SceneConfig(min_objects=4))
    crops = object_crops(image, scene, np.random.default_rng(0))
    assert len(crops) == len(scene.objects)
    for crop, obj in zip(crops, scene.objects):
        x0, y0, x1, y1 = crop.crop_xyxy
        assert crop.image.size == (x1 - x0, y1 - y0)
        assert x0 <= obj.box_xyxy[0] and y0 <= obj.box_xyxy[1] and obj.box_xyxy[2] <= x1 and obj.box_xyxy[3] <= y1
        assert _mentioned(crop.phrase) == Counter({obj.shape: 1}) and crop.shape == obj.shape


def _cli(argv: list[str]) -> int:
    from ovdet.cli import shapeworld

    parser = argparse.ArgumentParser(prog="ovdet")
    shapeworld.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["shapeworld", *argv])
    return args.run(args)


def test_cli_writes_images_instances_and_captions(tmp_path):
    out = tmp_path / "sw"
    assert _cli(["--out", str(out), "--num-images", "3", "--seed", "4", "--crops", "2", "--quiet"]) == 0
    coco = json.loads((out / "instances.json").read_text())
    assert len(coco["images"]) == 3 and len(list((out / "images").glob("*.png"))) == 3
    lines = (out / "captions.jsonl").read_text().splitlines()
    assert [json.loads(line)["file_name"] for line in lines] == [im["file_name"] for im in coco["images"]]
    crops = [json.loads(line) for line in (out / "crops.jsonl").read_text().splitlines()]
    assert crops and all((out / c["file_name"]).is_file() for c in crops)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num-images", "0"], "positive integer"),
        (["--num-images", "2", "--seed", "-1"], "non-negative"),
        (["--num-images", "2", "--min-size", "300", "--max-size", "200"], "min_size"),
        (["--num-images", "2", "--max-objects", "0"], "max_objects"),
    ],
)
def test_cli_bad_values_raise_value_error(tmp_path, argv, message):
    with pytest.raises(ValueError, match=message):
        _cli(["--out", str(tmp_path / "x"), *argv])


def test_cli_defaults_are_the_scene_config_defaults():
    from ovdet.cli import shapeworld

    parser = argparse.ArgumentParser()
    shapeworld.add_parser(parser.add_subparsers())
    args = parser.parse_args(["shapeworld", "--out", "x", "--num-images", "1"])
    default = SceneConfig()
    assert (args.min_size, args.max_size, args.min_aspect) == (default.min_size, default.max_size, default.min_aspect)
    assert (args.min_objects, args.max_objects) == (default.min_objects, default.max_objects)
    assert (args.min_visible, args.distractors) == (default.min_visible, default.max_distractors)


def test_output_path_that_is_a_file_is_rejected(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("not a directory")
    with pytest.raises(ValueError, match="is a file"):
        _cli(["--out", str(target), "--num-images", "1"])


def test_bad_seed_and_split_file_raise():
    with pytest.raises(ValueError, match="seed"):
        render_scene(-3)
    with pytest.raises(ValueError, match="not found"):
        load_split("/nonexistent/split.yaml")


def test_cli_refuses_an_existing_set_unless_overwrite_which_removes_only_its_own_files(tmp_path, capsys):
    from ovdet.cli.main import main

    out = tmp_path / "sw"
    assert main(["shapeworld", "--out", str(out), "--num-images", "4", "--seed", "0", "--crops", "1", "--quiet"]) == 0
    before = (out / "instances.json").read_bytes()
    capsys.readouterr()
    # A smaller set over a bigger one would leave images 2 and 3 beside an instances.json that lists 2.
    assert main(["shapeworld", "--out", str(out), "--num-images", "2", "--seed", "5", "--quiet"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ovdet shapeworld: error:") and "--overwrite" in lines[0]
    assert "4 images" in lines[0] and (out / "instances.json").read_bytes() == before

    (out / "notes.txt").write_text("mine")
    (out / "images" / "mine.jpg").write_bytes(b"mine")
    assert main(["shapeworld", "--out", str(out), "--num-images", "2", "--seed", "5", "--quiet", "--overwrite"]) == 0
    said = capsys.readouterr().out
    assert "removed" in said and "instances.json, captions.jsonl, crops.jsonl, 4 images, 4 crops" in said
    assert sorted(p.name for p in (out / "images").iterdir()) == ["000000.png", "000001.png", "mine.jpg"]
    assert not (out / "crops").exists() and not (out / "crops.jsonl").exists()  # the new set has no crops
    assert (out / "notes.txt").read_text() == "mine"
    assert len(json.loads((out / "instances.json").read_text())["images"]) == 2


def test_cli_output_to_a_pipe_starts_with_its_message(tmp_path, capsys):
    """M23: the transient progress bar left a blank first line when stdout is not a terminal."""
    from ovdet.cli.main import main

    assert main(["shapeworld", "--out", str(tmp_path / "sw"), "--num-images", "2", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wrote 2 images"), repr(out[:80])

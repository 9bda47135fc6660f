"""ShapeWorld datasets: PNG images, COCO instances with attributes, captions, single-object crops.

Image i of a dataset with seed S is `render_scene((S, i))`, so any image can be rebuilt alone,
and the output is identical whatever the number of worker processes.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import track

from ovdet.data.shapeworld import Scene, SceneConfig, ShapeSplit, load_split, render_scene
from ovdet.data.shapeworld_captions import object_phrase, scene_captions
from ovdet.data.shapeworld_files import clear_output

ANNOTATE = ("all", "base")
PNG_LEVEL = 3  # zlib level: as small as level 6 on these noisy images, twice as fast


@dataclass(frozen=True)
class CropSample:
    """A single-object crop with a short phrase, for contrastive pretraining and zero-shot tests."""

    image: Image.Image
    phrase: str
    shape: str
    color: str
    size: str
    style: str
    crop_xyxy: tuple[int, int, int, int]


def object_crops(
    image: Image.Image, scene: Scene, rng: np.random.Generator, max_crops: int | None = None, context: float = 0.2
) -> list[CropSample]:
    """Square crops around objects (box plus `context` of its side each way), each with a phrase."""
    order = rng.permutation(len(scene.objects))[: max_crops if max_crops is not None else len(scene.objects)]
    crops = []
    for i in sorted(order):
        obj = scene.objects[i]
        x0, y0, x1, y1 = obj.box_xyxy
        side = min(round(max(x1 - x0, y1 - y0) * (1 + 2 * context)), scene.width, scene.height)
        left = int(np.clip(round((x0 + x1 - side) / 2), 0, scene.width - side))
        top = int(np.clip(round((y0 + y1 - side) / 2), 0, scene.height - side))
        box = (left, top, left + side, top + side)
        phrase = object_phrase(obj, rng)
        crops.append(CropSample(image.crop(box), phrase, obj.shape, obj.color, obj.size, obj.style, box))
    return crops


@dataclass(frozen=True)
class _Job:
    out_dir: Path
    seed: int
    index: int
    config: SceneConfig
    split: ShapeSplit
    captions: int
    crops: int


def write_dataset(
    out_dir: str | Path,
    num_images: int,
    seed: int,
    config: SceneConfig = SceneConfig(),
    annotate: str = "all",
    captions_per_image: int = 5,
    crops_per_image: int = 0,
    workers: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Write `out_dir/images/*.png`, `instances.json` (COCO), `captions.jsonl` and optionally crops.

    annotate: "all" boxes every object (validation); "base" boxes base shapes only, while novel
        ones stay in the pixels unannotated (open-vocabulary training).
    crops_per_image: up to this many single-object crops per image into `out_dir/crops/` and
        `crops.jsonl` (phrase and attributes per crop).
    workers: processes to render with (0 = this one).
    overwrite: replace a set already in `out_dir`, removing only the files ovdet wrote there;
        False refuses (`DatasetExistsError`), as a new set would leave the old set's extra images.
    Returns counts and timing: {"images", "annotations", "crops", "seconds", "images_per_s"} and
    "removed", the old set's files by kind (`shapeworld_files.written_files`).
    """
    out_dir = _check_args(out_dir, num_images, seed, annotate, captions_per_image, crops_per_image, workers)
    removed = clear_output(out_dir, overwrite)
    split = load_split()
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    if crops_per_image:
        (out_dir / "crops").mkdir(exist_ok=True)
    jobs = [_Job(out_dir, seed, i, config, split, captions_per_image, crops_per_image) for i in range(num_images)]
    start = time.perf_counter()
    if workers:
        with ProcessPoolExecutor(workers) as pool:
            results = list(_progress(pool.map(_write_image, jobs, chunksize=16), num_images, progress))
    else:
        results = list(_progress(map(_write_image, jobs), num_images, progress))
    seconds = time.perf_counter() - start

    info = {"description": "ShapeWorld", "seed": seed, "annotate": annotate, "config": asdict(config)}
    coco = _coco(results, split, annotate, info)
    (out_dir / "instances.json").write_text(json.dumps(coco))
    _write_lines(out_dir / "captions.jsonl", [r[2] for r in results])
    if crops_per_image:
        _write_lines(out_dir / "crops.jsonl", [line for r in results for line in r[3]])
    return {
        "images": num_images,
        "annotations": len(coco["annotations"]),
        "crops": sum(len(r[3]) for r in results),
        "seconds": round(seconds, 3),
        "images_per_s": round(num_images / max(seconds, 1e-9), 1),
        "removed": removed,
    }


def _check_args(out_dir, num_images, seed, annotate, captions, crops, workers) -> Path:
    """Reject bad values before anything is written, naming the value and the fix."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output path '{out_dir}' is a file; give a directory (it is created if missing)")
    if not isinstance(num_images, int) or num_images <= 0:
        raise ValueError(f"number of images must be a positive integer, got {num_images!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if annotate not in ANNOTATE:
        raise ValueError(f"annotate must be one of {ANNOTATE}, got {annotate!r}")
    if captions < 1 or crops < 0 or workers < 0:
        raise ValueError(f"need captions >= 1, crops >= 0 and workers >= 0; got {captions}, {crops}, {workers}")
    return out_dir


def _write_image(job: _Job) -> tuple[dict, list[dict], dict, list[dict]]:
    """Render, save and describe image `job.index`: (image record, objects, captions line, crop lines)."""
    image, scene = render_scene((job.seed, job.index), job.config)
    image_id = job.index + 1
    file_name = f"{job.index:06d}.png"
    image.save(job.out_dir / "images" / file_name, format="PNG", compress_level=PNG_LEVEL)
    record = {"id": image_id, "file_name": file_name, "width": scene.width, "height": scene.height}
    objects = [
        {
            "shape": o.shape,
            "bbox": [o.box_xyxy[0], o.box_xyxy[1], o.box_xyxy[2] - o.box_xyxy[0], o.box_xyxy[3] - o.box_xyxy[1]],
            "area": o.area,
            "iscrowd": 0,
            "attributes": {"color": o.color, "size": o.size, "style": o.style},
            "visible": o.visible,
        }
        for o in scene.objects
    ]
    captions = scene_captions(scene, np.random.default_rng((job.seed, job.index, 1)), job.captions)
    caption_line = {"image_id": image_id, "file_name": file_name, "captions": captions}
    crop_lines = []
    if job.crops:
        crops = object_crops(image, scene, np.random.default_rng((job.seed, job.index, 2)), job.crops)
        for k, crop in enumerate(crops):
            name = f"crops/{job.index:06d}_{k}.png"
            crop.image.save(job.out_dir / name, format="PNG", compress_level=PNG_LEVEL)
            attrs = {"shape": crop.shape, "split": job.split.split_of(crop.shape), "color": crop.color}
            attrs |= {"size": crop.size, "style": crop.style}
            crop_lines.append({"file_name": name, "image_id": image_id, "phrase": crop.phrase, **attrs})
    return record, objects, caption_line, crop_lines


def _coco(results: list[tuple], split: ShapeSplit, annotate: str, info: dict) -> dict:
    """COCO instances; every category carries its split, novel boxes are left out when annotate='base'."""
    categories = [
        {"id": k + 1, "name": shape, "supercategory": "shape", "split": split.split_of(shape)}
        for k, shape in enumerate(split.shapes)
    ]
    category_id = {c["name"]: c["id"] for c in categories}
    annotations = []
    for image, objects, _, _ in results:
        for obj in objects:
            if annotate == "base" and split.split_of(obj["shape"]) == "novel":
                continue
            fields = {k: v for k, v in obj.items() if k != "shape"}
            annotation = {"id": len(annotations) + 1, "image_id": image["id"], "category_id": category_id[obj["shape"]]}
            annotations.append(annotation | fields)
    return {"info": info, "images": [r[0] for r in results], "annotations": annotations, "categories": categories}


def _progress(results, total: int, enabled: bool):
    return track(results, total=total, description="ShapeWorld", disable=not enabled, transient=True)


def _write_lines(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))

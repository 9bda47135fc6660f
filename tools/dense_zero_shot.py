"""Dense-feature zero-shot accuracy of a CLIP on ShapeWorld ground-truth boxes (issue N, item 4).

    python tools/dense_zero_shot.py [--clip DIR] --scenes 120 --seed 1000 [--out FILE.json]
    python tools/dense_zero_shot.py [--clip DIR] --annotations instances.json --images DIR

Every ground-truth box is named by the nearest of all 16 ShapeWorld shape names (text embeddings averaged
over the templates), four ways, through `ovdet.distill`:
  - centre cell: the one dense cell under the box centre, alone in the joint space (one pass);
  - box-pooled: the dense map RoI-aligned over the box through the tower's own pooling (one pass; a ResNet:
    layer3 RoI-aligned, then layer4 and the attention pool, `ovdet.distill.region_tower`);
  - square box-pooled: the same over the square of `--square-margin` x the box's long side (what the
    dense-distillation stage trains and one-pass region scoring reads, `region_scoring.context`);
  - crop: the same tower's embedding of the box cut out and stretched to the tower's resolution (CLIPSelf's
    crop, the target the dense-distillation stage teaches; one pass per box);
  - square_crop: the same, of a square of `--square-margin` x the box's long side around its centre (the
    crops ShapeWorld's CLIP was trained on, so its naming ceiling).
Each for base and novel shapes and all; plus the mean cosine between square box-pooled and square crop
embeddings, what the dense-distillation stage (`ovdet train experiment=dense_distill`) pulls towards 1.
Scenes from `--scenes N --seed S` are the images of `ovdet shapeworld --num-images N --seed S`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image

from ovdet.errors import OvdetError

SPLITS = ("base", "novel", "all")
MEASURES = ("centre_cell", "box_pooled", "square_pooled", "crop", "square_crop")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default=None,
                        help="CLIP folder (open_clip ResNet or transformers ViT); default: the packaged ShapeWorld one")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--annotations", type=Path, help="ShapeWorld COCO instances.json (all objects annotated)")
    source.add_argument("--scenes", type=int, help="render N ShapeWorld scenes in memory instead (with --seed)")
    parser.add_argument("--images", type=Path, default=None,
                        help="image folder of --annotations (default: the images/ folder beside it)")
    parser.add_argument("--seed", type=int, default=1000,
                        help="dataset seed of --scenes (default 1000, the held-out one)")
    parser.add_argument("--templates", default="clip7", help="prompt template set (default clip7)")
    parser.add_argument("--image-size", type=int, default=256,
                        help="square input side; default 256, what the embedded ShapeWorld model detects at")
    parser.add_argument("--square-margin", type=float, default=1.4,
                        help="side of the square (pooled and cropped) over the box's long side (default 1.4, the "
                             "stage's and region scoring's context 0.2)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per tower pass (default 8)")
    parser.add_argument("--out", type=Path, default=None, help="write the numbers as JSON (marked as ovdet's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out that ovdet did not write")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    """Every argument checked, and --out refused, before the CLIP loads."""
    from ovdet.file_mark import check_replaceable_file

    if args.scenes is not None and args.scenes < 1:
        raise OvdetError(f"--scenes {args.scenes}; give a number of scenes >= 1")
    if args.seed < 0:
        raise OvdetError(f"--seed {args.seed}; give a seed >= 0")
    if args.image_size < 32 or args.image_size % 32:
        raise OvdetError(f"--image-size {args.image_size}; give a multiple of 32 (the tower's stride), e.g. 256")
    if not 1.0 <= args.square_margin <= 4.0:
        raise OvdetError(f"--square-margin {args.square_margin}; give a factor in [1, 4], e.g. 1.1")
    if args.batch_size < 1:
        raise OvdetError(f"--batch-size {args.batch_size}; give an integer >= 1")
    if args.annotations is not None:
        if not args.annotations.is_file():
            raise OvdetError(f"--annotations '{args.annotations}' is not a file; name a COCO instances.json")
        args.images = args.images or args.annotations.parent / "images"
        if not args.images.is_dir():
            raise OvdetError(f"--images '{args.images}' is not a folder; name the folder of the annotated images")
    if args.out is not None:
        check_replaceable_file(args.out, "--out", args.overwrite)
        if args.annotations is not None and args.out.resolve() == args.annotations.resolve():
            raise OvdetError(f"--out '{args.out}' is the --annotations input; choose another path")


def _coco_samples(annotations: Path, images: Path, names: list[str]) -> Iterator[tuple[Image.Image, list, list]]:
    """(image, boxes xyxy in image pixels, shape names) per COCO image with at least one box."""
    from ovdet.image_io import load_image
    from ovdet.json_file import read_json_file

    data = read_json_file(annotations, error=OvdetError)
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= data.keys():
        raise OvdetError(f"--annotations '{annotations}' is not COCO instances; name a ShapeWorld instances.json")
    category = {c["id"]: c["name"] for c in data["categories"]}
    unknown = sorted(set(category.values()) - set(names))
    if unknown:
        raise OvdetError(f"--annotations '{annotations}' has categories {unknown} that are not ShapeWorld shapes; "
                         "name a ShapeWorld set")
    per_image: dict[int, list[dict]] = {}
    for ann in data["annotations"]:
        per_image.setdefault(ann["image_id"], []).append(ann)
    for record in data["images"]:
        anns = per_image.get(record["id"], [])
        if anns:
            boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
            yield load_image(images / record["file_name"]), boxes, [category[a["category_id"]] for a in anns]


def _scene_samples(num_scenes: int, seed: int) -> Iterator[tuple[Image.Image, list, list]]:
    """Image i is `render_scene((seed, i))`, as in `ovdet shapeworld --seed S`."""
    from ovdet.data.shapeworld import render_scene

    for index in range(num_scenes):
        image, scene = render_scene((seed, index))
        if scene.objects:
            yield image, [list(o.box_xyxy) for o in scene.objects], [o.shape for o in scene.objects]


def square_boxes(boxes: torch.Tensor, margin: float) -> torch.Tensor:
    """[K, 4] xyxy -> [K, 4] xyxy squares of side margin x the long side, same centres (`square_context`)."""
    from ovdet.boxes import square_context

    return square_context(boxes, (margin - 1.0) / 2)


def _batches(samples, size: int) -> Iterator[list]:
    batch = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@torch.no_grad()
def measure(args: argparse.Namespace) -> dict:
    """The numbers the tool reports, as one JSON-ready dict."""
    from rich.progress import track

    from ovdet.data.shapeworld import load_split
    from ovdet.distill.region_embedding import crop_embeddings, dense_region_embeddings
    from ovdet.distill.region_tower import region_tower
    from ovdet.distill.zero_shot import centre_cell_embeddings, name_embeddings
    from ovdet.preprocess import ImagePreprocessor
    from ovdet.pretraining.zero_shot import classify
    from ovdet.towers.loader import load_clip
    from ovdet.training.config_paths import asset_path

    split = load_split()
    names = list(split.shapes)  # [N] every box competes over all of them
    clip_ref = args.clip or asset_path("default_model/clip")
    clip = load_clip(clip_ref)
    tower = region_tower(clip).eval()
    text = name_embeddings(clip.text_tower, names, args.templates)  # [N, E]
    pre = ImagePreprocessor(args.image_size, clip.backbone.image_mean, clip.backbone.image_std)
    if args.annotations is not None:
        samples, total = _coco_samples(args.annotations, args.images, names), None
    else:
        samples, total = _scene_samples(args.scenes, args.seed), args.scenes
    right = {m: [] for m in MEASURES}
    labels, cosines = [], []
    batches = _batches(samples, args.batch_size)
    steps = None if total is None else -(-total // args.batch_size)
    for batch in track(batches, total=steps, description="boxes", disable=args.no_progress, transient=True):
        pixels = pre.to_model([image for image, _, _ in batch])  # [B, 3, S, S]
        scales = [args.image_size / max(image.size) for image, _, _ in batch]
        boxes = [torch.tensor(b, dtype=torch.float32).reshape(-1, 4) * s for (_, b, _), s in zip(batch, scales)]
        ids = torch.tensor([names.index(n) for _, _, shapes in batch for n in shapes])  # [K]
        squares = [square_boxes(b, args.square_margin) for b in boxes]
        embeds = {
            "centre_cell": centre_cell_embeddings(tower, pixels, boxes),  # [K, E]
            "box_pooled": dense_region_embeddings(tower, pixels, boxes),  # [K, E]
            "square_pooled": dense_region_embeddings(tower, pixels, squares),  # [K, E]
            "crop": crop_embeddings(tower, pixels, boxes),  # [K, E]
            "square_crop": crop_embeddings(tower, pixels, squares),  # [K, E]
        }
        for m in MEASURES:
            right[m].append(classify(embeds[m], text.to(embeds[m])).cpu() == ids)  # [K]
        cosines.append((embeds["square_pooled"] * embeds["square_crop"]).sum(-1).cpu())  # [K]
        labels.append(ids)
    if not labels:
        raise OvdetError("no ground-truth boxes found; name a ShapeWorld set with annotated objects")
    ids = torch.cat(labels)  # [K]
    novel = torch.tensor([split.split_of(n) == "novel" for n in names])[ids]  # [K]
    masks = {"base": ~novel, "novel": novel, "all": torch.ones_like(novel)}
    result = {
        "clip": str(clip_ref),
        "source": {"annotations": str(args.annotations)} if args.annotations is not None
        else {"scenes": args.scenes, "seed": args.seed},
        "image_size": args.image_size,
        "templates": args.templates,
        "square_margin": args.square_margin,
        "names": names,
        "boxes": {s: int(masks[s].sum()) for s in SPLITS},
        "pooled_crop_cosine": float(torch.cat(cosines).mean()),
    }
    for m in MEASURES:
        hits = torch.cat(right[m]).float()  # [K]
        result[m] = {s: float(hits[masks[s]].mean()) if masks[s].any() else None for s in SPLITS}
    return result


def table(result: dict) -> str:
    """A small plain-text table: one row per measure, accuracy in % per split."""
    counts = result["boxes"]
    lines = [f"{'accuracy (%)':<14}" + "".join(f"{f'{s} ({counts[s]})':>14}" for s in SPLITS)]
    for m in MEASURES:
        cells = ["-" if result[m][s] is None else f"{100 * result[m][s]:.1f}" for s in SPLITS]
        lines.append(f"{m:<14}" + "".join(f"{c:>14}" for c in cells))
    lines.append(f"mean cosine square box-pooled vs square crop: {result['pooled_crop_cosine']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        _check_args(args)
        result = measure(args)
    except OvdetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table(result))
    if args.out is not None:
        from ovdet.file_mark import marked
        from ovdet.safe_write import atomic_write_text

        atomic_write_text(args.out, json.dumps(marked(result), indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

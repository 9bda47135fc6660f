"""Region search measured: the vector store choice, and `ovdet index` / `ovdet search` on ShapeWorld.

    python tools/search_benchmark.py stores [--sizes 500,10000,1000000] [--dim 128]
    python tools/search_benchmark.py shapeworld DATA_DIR [--model MODEL] [--top 50] [--index DIR]

`stores` compares FAISS (flat inner product, exact) and LanceDB (brute-force "dot" search, no ANN index)
on synthetic L2-normalised embeddings: time to add N regions, latency of one query (median of 20),
size on disk, and the cost of one incremental update (one image of 32 regions dropped and re-added,
then saved). `shapeworld` indexes DATA_DIR/images (an `ovdet shapeworld` set) with the embedded model,
then searches each novel shape's name and reports precision of the top K hits (a hit is right when its
box overlaps a ground-truth box of that shape with IoU >= 0.5), index time per image, and search latency
of `ovdet search`'s scorer at the index's own size and at 10k / 1M synthetic regions.
Run with OMP_NUM_THREADS=1: every number is one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REGIONS_PER_IMAGE = 32


def main() -> None:
    args = _parser().parse_args()
    try:
        args.run(args)
    except (ValueError, OSError) as err:
        print(f"tools/search_benchmark.py: error: {err}", file=sys.stderr)
        sys.exit(2)


# ---- vector stores ---------------------------------------------------------------------------------
def run_stores(args: argparse.Namespace) -> None:
    """One markdown table: store x size -> add s, query ms, disk MB, update ms."""
    import importlib.util

    stores = [("FAISS IndexFlatIP", _bench_faiss), ("LanceDB (brute force)", _bench_lancedb)]
    if importlib.util.find_spec("lancedb") is None:  # not a dependency of ovdet: only this comparison uses it
        print("lancedb is not installed (pip install lancedb): measuring FAISS alone", file=sys.stderr)
        stores = stores[:1]
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        vectors = _unit_vectors(n, args.dim, seed=0)  # [N, E]
        query = _unit_vectors(1, args.dim, seed=1)  # [1, E]
        for name, bench in stores:
            with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
                add_s, query_ms, disk_mb, update_ms = bench(vectors, query, Path(tmp))
            rows.append((name, n, add_s, query_ms, disk_mb, update_ms))
            print(f"{name:24s} N={n:>8d} add {add_s:7.2f} s  query {query_ms:8.2f} ms  disk {disk_mb:8.1f} MB  "
                  f"update {update_ms:8.1f} ms", flush=True)
    print("\n| store | regions | add (s) | one query, top 50 (ms) | disk (MB) | update one image (ms) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, n, add_s, query_ms, disk_mb, update_ms in rows:
        print(f"| {name} | {n:,} | {add_s:.2f} | {query_ms:.2f} | {disk_mb:.1f} | {update_ms:.1f} |")


def _bench_faiss(vectors: np.ndarray, query: np.ndarray, tmp: Path) -> tuple[float, float, float, float]:
    import faiss

    faiss.omp_set_num_threads(1)
    ids = np.arange(len(vectors), dtype=np.int64)
    start = time.perf_counter()
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    index.add_with_ids(vectors, ids)
    faiss.write_index(index, str(tmp / "regions.faiss"))
    add_s = time.perf_counter() - start
    query_ms = _median_ms(lambda: index.search(query, 50))
    disk_mb = _folder_mb(tmp)
    start = time.perf_counter()  # one image changed: drop its regions, add the new ones, save
    index.remove_ids(ids[:REGIONS_PER_IMAGE])
    index.add_with_ids(vectors[:REGIONS_PER_IMAGE], ids[:REGIONS_PER_IMAGE] + len(vectors))
    faiss.write_index(index, str(tmp / "regions.faiss"))
    update_ms = (time.perf_counter() - start) * 1000
    return add_s, query_ms, disk_mb, update_ms


def _bench_lancedb(vectors: np.ndarray, query: np.ndarray, tmp: Path) -> tuple[float, float, float, float]:
    import lancedb
    import pyarrow as pa

    n, dim = vectors.shape
    image = np.arange(n, dtype=np.int64) // REGIONS_PER_IMAGE
    start = time.perf_counter()
    db = lancedb.connect(str(tmp))
    table = db.create_table("regions", pa.table({
        "image": pa.array(image),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
    }))  # fmt: skip
    add_s = time.perf_counter() - start
    query_ms = _median_ms(lambda: table.search(query[0]).metric("dot").limit(50).to_arrow())
    disk_mb = _folder_mb(tmp)
    start = time.perf_counter()
    table.delete("image = 0")
    table.add(pa.table({
        "image": pa.array(np.full(REGIONS_PER_IMAGE, image[-1] + 1, dtype=np.int64)),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors[:REGIONS_PER_IMAGE].reshape(-1)), dim),
    }))  # fmt: skip
    update_ms = (time.perf_counter() - start) * 1000
    return add_s, query_ms, disk_mb, update_ms


# ---- ovdet index / search on ShapeWorld -----------------------------------------------------------
def run_shapeworld(args: argparse.Namespace) -> None:
    """Index the set, search each shape's name, print precision@K, index time per image, search latency."""
    import torch

    from ovdet.assets import resolve_model
    from ovdet.models.detector import Detector
    from ovdet.search import region_index
    from ovdet.search.region_search import search

    torch.set_num_threads(1)
    gt = json.loads((args.data / "instances.json").read_text())
    name = resolve_model(args.model)
    detector = Detector.from_pretrained(name).eval()
    paths = [str((args.data / "images" / img["file_name"]).resolve()) if not Path(img["file_name"]).is_absolute()
             else img["file_name"] for img in gt["images"]]
    index, seconds = _build_index(detector, name, paths, args.batch_size)
    if args.index:
        region_index.save(index, args.index)
    print(f"indexed {len(paths)} images ({index.num_regions} regions) in {seconds:.1f} s: "
          f"{1000 * seconds / len(paths):.0f} ms per image (batch {args.batch_size}, 1 thread)")
    split = json.loads((Path(__file__).resolve().parents[1] / "ovdet/data/shapeworld_split.json").read_text())
    boxes = _gt_boxes(gt, paths)
    print(f"\n| shape | split | objects in the set | precision of the top {args.top} |")
    print("| --- | --- | ---: | ---: |")
    for kind in ("novel", "base"):
        for shape in split[kind]:
            hits = search(detector, index, [shape], top=args.top)
            right = sum(_matches(hit, boxes.get((hit.path, shape), [])) for hit in hits)
            count = sum(len(v) for (p, s), v in boxes.items() if s == shape)
            print(f"| {shape} | {kind} | {count} | {right / max(len(hits), 1):.2f} |", flush=True)
    print("\n| regions | one search, top 50 (ms) | loading the index (ms) | index on disk (MB) |")
    print("| ---: | ---: | ---: | ---: |")
    for n in (500, 10_000, 1_000_000):
        subset = _synthetic(index, n)
        search(detector, subset, ["star"], top=50)  # text embedding cached, as on any later search
        ms = _median_ms(lambda subset=subset: search(detector, subset, ["star"], top=50), repeats=5 if n > 100_000 else 20)
        with tempfile.TemporaryDirectory() as tmp:
            region_index.save(subset, Path(tmp) / "idx")
            load_ms = _median_ms(lambda tmp=tmp: region_index.load(Path(tmp) / "idx"), repeats=3)
            disk = _folder_mb(Path(tmp))
        print(f"| {n:,} | {ms:.1f} | {load_ms:.0f} | {disk:.1f} |", flush=True)


def _build_index(detector, name: str, paths: list[str], batch_size: int):
    """The index of `paths` built as `ovdet index` builds it, and the seconds the encoding took."""
    from ovdet.search.collection_changes import file_entry
    from ovdet.search.index_predict import encode_collection
    from ovdet.search.region_encoder import (
        default_regions,
        model_fingerprint,
        scoring_kind,
    )
    from ovdet.search.region_index import RegionIndex

    regions = default_regions(detector)
    index = RegionIndex(name, model_fingerprint(detector), scoring_kind(detector), regions,
                        detector.text_encoder.embed_dim)  # fmt: skip
    start = time.perf_counter()
    records, _ = encode_collection(detector, paths, regions, batch_size=batch_size, accelerator="cpu", progress=False)
    seconds = time.perf_counter() - start
    index.extend([{**file_entry(paths[rec["id"]]), "width": rec["width"], "height": rec["height"]} for rec in records],
                 [rec["embeds"] for rec in records], [rec["arrays"] for rec in records])  # fmt: skip
    return index, seconds


def _gt_boxes(gt: dict, paths: list[str]) -> dict[tuple[str, str], list[list[float]]]:
    """(image path, shape name) -> its ground-truth boxes xyxy."""
    names = {c["id"]: c["name"] for c in gt["categories"]}
    path_of = {img["id"]: path for img, path in zip(gt["images"], paths)}
    boxes: dict[tuple[str, str], list[list[float]]] = {}
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        boxes.setdefault((path_of[ann["image_id"]], names[ann["category_id"]]), []).append([x, y, x + w, y + h])
    return boxes


def _matches(hit, boxes: list[list[float]]) -> bool:
    import torch
    from torchvision.ops import box_iou

    if not boxes:
        return False
    return bool(box_iou(torch.tensor([hit.box]), torch.tensor(boxes)).max() >= 0.5)


def _synthetic(index, n: int):
    """An index of `n` synthetic regions (random unit embeddings, boxes and objectness; 32 per image) with the
    real index's model: a search costs the same whatever the values."""
    from ovdet.search.region_index import RegionIndex

    images = -(-n // REGIONS_PER_IMAGE)
    rng = np.random.default_rng(0)
    out = RegionIndex(index.model, index.fingerprint, index.scoring, REGIONS_PER_IMAGE, index.embed_dim,
                      [{"path": f"synthetic/{i}.png", "bytes": 0, "mtime_ns": 0, "regions": REGIONS_PER_IMAGE}
                       for i in range(images)])  # fmt: skip
    out.images[-1]["regions"] -= images * REGIONS_PER_IMAGE - n
    out.embeds = _unit_vectors(n, index.embed_dim, seed=2)
    corner = rng.uniform(0, 200, (n, 2)).astype(np.float32)
    out.arrays = {"boxes": np.concatenate([corner, corner + rng.uniform(10, 100, (n, 2)).astype(np.float32)], 1),
                  "objectness": rng.normal(-2, 2, n).astype(np.float32), "logit_scale": np.ones(n, np.float32),
                  "logit_bias": np.zeros(n, np.float32), "reference_lse": rng.normal(0, 1, n).astype(np.float32)}
    return out


def _unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)  # [N, E]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _median_ms(call, repeats: int = 20) -> float:
    call()  # warm-up (first-call allocations, file cache)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    stores = sub.add_parser("stores", help="compare FAISS and LanceDB on synthetic embeddings")
    stores.add_argument("--sizes", default="500,10000,1000000", help="region counts, comma-separated")
    stores.add_argument("--dim", type=int, default=128, help="embedding width (the embedded model's: 128)")
    stores.add_argument("--tmp", default=None, help="folder for the temporary stores (default: the system's)")
    stores.set_defaults(run=run_stores)
    world = sub.add_parser("shapeworld", help="index an `ovdet shapeworld` set, report precision@K and latency")
    world.add_argument("data", type=Path, help="folder with instances.json and images/ (ovdet shapeworld --out)")
    world.add_argument("--model", default=None, help="default: the embedded model")
    world.add_argument("--top", type=int, default=50, help="hits per shape whose precision is reported")
    world.add_argument("--batch-size", type=int, default=8, help="images per forward pass while indexing")
    world.add_argument("--index", type=Path, default=None, help="also save the index here")
    world.set_defaults(run=run_shapeworld)
    return parser


if __name__ == "__main__":
    main()

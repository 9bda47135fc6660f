"""The region index folder: which images, and their regions' embeddings, boxes and score terms.

    INDEX/index.json           ovdet's mark, the model (name and fingerprint), settings, one entry per image
    INDEX/regions.faiss        FAISS IndexFlatIP of the region embeddings [N, E], rows in image order
    INDEX/regions.safetensors  per row: boxes [N, 4] xyxy pixels, objectness, logit_scale, logit_bias and
                               reference_lse [N]; with a model that has a trained region classifier also
                               classifier_embeds [N, E] and classifier_reference_lse [N]
                               (see `ovdet.search.region_encoder`)

FAISS, not LanceDB, by measurement (tools/search_benchmark.py stores): a flat scan of 1M regions takes 59 ms
against LanceDB's 1.1 s, and adding them 0.6 s against 5.5 s; LanceDB updates one image in place (18 ms) where
FAISS rewrites the file (0.6 s at 1M), but that is paid once per `ovdet index` run, not per image.
The folder is written whole (`safe_write.replace_folder`): a killed run leaves the previous index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ovdet import file_mark
from ovdet.errors import OvdetError
from ovdet.json_file import read_json_file

FORMAT = "ovdet-region-index"
VERSION = 1
META, VECTORS, ARRAYS = "index.json", "regions.faiss", "regions.safetensors"
FILES = (META, VECTORS, ARRAYS)
ARRAY_NAMES = ("boxes", "objectness", "logit_scale", "logit_bias", "reference_lse")
CLASSIFIER_ARRAYS = ("classifier_embeds", "classifier_reference_lse")  # only a model with a region classifier
KIND = "a region index"


@dataclass
class RegionIndex:
    """An index in memory. `images`: one dict per image (path, width, height, bytes, mtime_ns, sha256, regions),
    in row order; `embeds` [N, E] float32 L2-normalised; `arrays`: ARRAY_NAMES -> [N, ...] float32."""

    model: str
    fingerprint: str
    scoring: str
    regions_per_image: int
    embed_dim: int
    images: list[dict] = field(default_factory=list)
    embeds: np.ndarray | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    store: object = field(default=None, repr=False)  # the FAISS index `embeds` is a view of, when loaded

    def __post_init__(self) -> None:
        if self.embeds is None:
            self.embeds = np.zeros((0, self.embed_dim), dtype=np.float32)
            self.arrays = {"boxes": np.zeros((0, 4), np.float32),
                           **{k: np.zeros(0, np.float32) for k in ARRAY_NAMES[1:]}}  # fmt: skip

    @property
    def num_regions(self) -> int:
        return len(self.embeds)

    def image_rows(self) -> np.ndarray:
        """[N] the image (index into `images`) of each region row."""
        return np.repeat(np.arange(len(self.images)), [img["regions"] for img in self.images])

    def select(self, keep: list[int]) -> RegionIndex:
        """A copy holding only the images at positions `keep` (in that order), with their rows."""
        starts = np.concatenate([[0], np.cumsum([img["regions"] for img in self.images])]).astype(np.int64)
        rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in keep]) if keep else np.zeros(0, np.int64)
        return RegionIndex(self.model, self.fingerprint, self.scoring, self.regions_per_image, self.embed_dim,
                           [dict(self.images[i]) for i in keep], self.embeds[rows],  # a copy: `store` not needed
                           {k: v[rows] for k, v in self.arrays.items()})  # fmt: skip

    def extend(self, images: list[dict], embeds: list[np.ndarray], arrays: list[dict[str, np.ndarray]]) -> None:
        """Add images' entries and their rows (per image: embeds [K, E], arrays as `arrays`), in one copy."""
        self.images += [{**image, "regions": len(rows)} for image, rows in zip(images, embeds)]
        self.embeds = np.concatenate([self.embeds, *embeds]).astype(np.float32, copy=False)
        present = set(self.arrays if self.num_regions else ()) | set(arrays[0] if arrays else ())
        names = list(ARRAY_NAMES) + [k for k in CLASSIFIER_ARRAYS if k in present]  # kept when nothing new is added
        self.arrays = {k: np.concatenate([a for a in [self.arrays.get(k), *(a[k] for a in arrays)] if a is not None])
                       .astype(np.float32, copy=False) for k in names}  # fmt: skip
        self.store = None

    def meta(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "model": self.model, "fingerprint": self.fingerprint,
                "scoring": self.scoring, "regions_per_image": self.regions_per_image, "embed_dim": self.embed_dim,
                "num_regions": self.num_regions, "files": list(FILES), "images": self.images}  # fmt: skip


def written_by_us(folder: Path) -> set[str] | None:
    """The files of an index folder that ovdet wrote (for `replace_folder`); None when it is not an index."""
    meta = folder / META
    if not file_mark.is_ours(meta):
        return None
    try:
        files = read_json_file(meta).get("files")
    except (ValueError, OSError, AttributeError):
        return None
    return set(files) if isinstance(files, list) and set(files) <= set(FILES) else None


def save(index: RegionIndex, folder: str | Path) -> Path:
    """Write the index folder whole (replacing only an index ovdet wrote)."""
    from safetensors.numpy import save_file

    from ovdet.inference.results_file import write_object
    from ovdet.safe_write import replace_folder

    faiss = _faiss()
    with replace_folder(Path(folder), written_by_us, KIND) as tmp:
        flat = faiss.IndexFlatIP(index.embed_dim)
        flat.add(np.ascontiguousarray(index.embeds, dtype=np.float32))
        faiss.write_index(flat, str(tmp / VECTORS))
        save_file({k: np.ascontiguousarray(v) for k, v in index.arrays.items()}, str(tmp / ARRAYS),
                  metadata={file_mark.MARK_KEY: file_mark.MARK_VALUE})  # fmt: skip
        write_object(index.meta(), tmp / META)
    return Path(folder)


def load(folder: str | Path) -> RegionIndex:
    """Read and check an index folder; anything not an intact ovdet index is one line naming it."""
    folder = Path(folder)
    fix = f"; build one with `ovdet index PHOTOS... --out {folder}`"
    if not folder.is_dir():
        raise OvdetError(f"index '{folder}' " + ("is not a folder" if folder.exists() else "does not exist") + fix)
    meta_path = folder / META
    if not meta_path.is_file():
        raise OvdetError(f"'{folder}' is not an ovdet region index (no {META}){fix}")
    meta = read_json_file(meta_path, f"'{meta_path}'", "; the index is damaged: delete it and run `ovdet index` "
                          "again", error=OvdetError)  # fmt: skip
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not file_mark.is_mark(meta.get(file_mark.MARK_KEY)):
        raise OvdetError(f"'{meta_path}' is not an ovdet region index's {META}{fix}")
    if meta.get("version") != VERSION:
        raise OvdetError(f"index '{folder}' has format version {meta.get('version')!r}; this ovdet reads {VERSION}: "
                         "delete it and run `ovdet index` again")  # fmt: skip
    try:
        index = RegionIndex(meta["model"], meta["fingerprint"], meta["scoring"], int(meta["regions_per_image"]),
                            int(meta["embed_dim"]), list(meta["images"]))  # fmt: skip
        counts = [int(img["regions"]) for img in index.images]
        for img in index.images:
            if not isinstance(img["path"], str) or not all(isinstance(img[k], int) for k in ("bytes", "mtime_ns")):
                raise ValueError(f"image entry {img['path']!r}")
    except (KeyError, TypeError, ValueError) as err:
        raise OvdetError(f"'{meta_path}' lacks or mangles {err}; the index is damaged: delete it and run "
                         "`ovdet index` again") from None
    index.store, index.embeds, index.arrays = _read_rows(folder, index.embed_dim)
    expected = sum(counts)
    sizes = {len(index.embeds), *(len(v) for v in index.arrays.values())}
    if sizes != {expected}:
        raise OvdetError(f"index '{folder}' is damaged: {META} lists {expected} regions, its files hold "
                         f"{sorted(sizes)}; delete it and run `ovdet index` again")  # fmt: skip
    return index


def _read_rows(folder: Path, dim: int) -> tuple[object, np.ndarray, dict[str, np.ndarray]]:
    from safetensors.numpy import load_file

    faiss = _faiss()
    try:
        flat = faiss.read_index(str(folder / VECTORS))
        if flat.d != dim:
            raise ValueError(f"{flat.d}-d vectors, {dim} expected")
        # [N, E]: a view of FAISS's own buffer (no copy of what may be gigabytes); the index keeps `flat` alive
        embeds = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * dim).reshape(flat.ntotal, dim) if flat.ntotal else \
            np.zeros((0, dim), np.float32)
        arrays = load_file(str(folder / ARRAYS))
        missing = [k for k in ARRAY_NAMES if k not in arrays]
        if missing:
            raise ValueError(f"no {missing}")
        names = ARRAY_NAMES + tuple(k for k in CLASSIFIER_ARRAYS if k in arrays)
    except Exception as err:  # noqa: BLE001 - faiss raises RuntimeError, safetensors its own: all mean "damaged"
        message = " ".join(str(err).split())[:200]
        raise OvdetError(f"index '{folder}' is damaged ({type(err).__name__}: {message}); delete it and run "
                         "`ovdet index` again") from None
    return flat, embeds, {k: arrays[k].astype(np.float32, copy=False) for k in names}


def _faiss():
    """The faiss module, or one line saying how to install it."""
    try:
        import faiss
    except ImportError:
        raise OvdetError("region indexes need FAISS, which is not installed: pip install faiss-cpu") from None
    return faiss

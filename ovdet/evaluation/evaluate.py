"""The one evaluation entry both CLIs call: run a detector (or read saved predictions), score, write."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from ovdet.data.coco_validation import check_eval_json
from ovdet.errors import OvdetWarning
from ovdet.evaluation.coco_ov import run_coco_ov
from ovdet.evaluation.predictions import load_json
from ovdet.evaluation.result import EvalResult
from ovdet.evaluation.splits import Split, load_split
from ovdet.safe_write import check_output_path

PROTOCOLS = ("auto", "coco", "lvis")
EVAL_MAX_DETS = {"coco": 100, "lvis": 300}  # COCOeval: per image and category; LVIS: per image


def evaluate_model(
    model,
    annotations: str | Path | dict,
    images: str | Path | None = None,
    *,
    split: str | Path | Sequence[str] | Split | None = None,
    protocol: str = "auto",
    templates=None,
    template_mode: str = "embed",
    vocabulary: str = "split",
    predictions: str | Path | None = None,
    out: str | Path | None = None,
    report: str | Path | None = None,
    batch_size: int = 8,
    workers: int = 2,
    max_dets: int = 300,
    score_threshold: float = 0.0,
    nms: float | None = 0.5,
    accelerator: str = "auto",
    devices: int | str | list[int] = 1,
    progress: bool = True,
    verbose: bool = False,
    overwrite: bool = False,
    precision: str | None = None,
    runtime: str = "torch",
    scoring: str = "model",
) -> EvalResult | None:
    """Evaluate a detector on a COCO or LVIS json, or evaluate saved COCO results.

    model: ovdet model folder, CLIP id/folder, or a built Detector; it runs on every image of
        `annotations` found under `images` and its results go to `predictions` when that is
        given. None: `predictions` must be an existing results file, evaluated as is (its
        `.meta.json` sidecar, when present, says what produced it).
    split: novel/base split (see `load_split`); None reads the categories' own `"split"`, and
        for LVIS falls back to rare = novel.
    protocol: "coco" (pycocotools, AP50 novel/base/all), "lvis" (LVISEval: AP, APr, APc, APf)
        or "auto": LVIS when the json's images carry `neg_category_ids`.
    vocabulary: "split" queries only the split's novel + base names when the split lists its
        base (OV-COCO: the 65 of 80, the generalized setting); "all": every category name.
    templates / template_mode / max_dets / score_threshold / nms / batch_size / workers /
        accelerator / devices: see `ovdet.inference.predict_coco`. precision / runtime / scoring: as the
        `--precision`, `--runtime` and `--scoring` options (`ovdet.cli.options`).
    out: write metrics.json there. report: write report.md and plots into that folder. Every file
        is written atomically (`ovdet.safe_write`) and carries ovdet's mark (`ovdet.file_mark`); a
        path that would overwrite an input, or an existing file ovdet did not write (unless
        `overwrite`), is refused before any work.

    Returns the EvalResult (metrics dict + precision arrays); None on non-zero DDP ranks.
    """
    _check_outputs(annotations, predictions if model is not None else None, out, report,
                   inputs=[predictions if model is None else None], overwrite=overwrite)  # fmt: skip
    gt = _load_annotations(annotations)
    protocol = detect_protocol(gt) if protocol == "auto" else protocol
    if protocol not in EVAL_MAX_DETS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    split_obj = resolve_split(split, gt, protocol)
    if model is not None:
        from ovdet.inference import images_from_coco

        entries = images_from_coco(gt, _require_images(images))
        cats = vocabulary_categories(gt["categories"], split_obj, vocabulary)
        dets, meta = run_detector(model, entries, images, cats, templates=templates, template_mode=template_mode,
                                  batch_size=batch_size, workers=workers, max_dets=max_dets,
                                  score_threshold=score_threshold, nms=nms, accelerator=accelerator,
                                  devices=devices, progress=progress, precision=precision,
                                  runtime=runtime, scoring=scoring)  # fmt: skip
        if dets is None:
            return None  # a non-zero DDP rank: rank 0 evaluates and writes
        meta["vocabulary"] = vocabulary
        if predictions is not None:
            from ovdet.inference.results_file import write_results

            meta["predictions"] = str(write_results(dets, predictions, meta))
    elif predictions is None:
        raise ValueError("nothing to evaluate: give a model to run, or a saved predictions file to evaluate")
    elif not Path(predictions).is_file():
        raise ValueError(f"predictions file '{predictions}' not found; give a model to run and write it there")
    else:
        from ovdet.inference.results_file import read_meta

        dets, meta = Path(predictions), {**read_meta(predictions), "predictions": str(predictions)}
    result = _score(gt, protocol, dets, split_obj, meta, verbose)
    _write_outputs(result, out, report)
    return result


def run_detector(
    model, entries: list[dict], images_dir, categories: Sequence[dict], **options
) -> tuple[list[dict] | None, dict]:
    """Batch inference with a model path or Detector; returns (COCO results or None off rank 0, meta)."""
    from ovdet.inference import predict_coco
    from ovdet.models.detector import Detector

    from ovdet.cli.options import apply_scoring, apply_speed

    precision, runtime = options.pop("precision", None), options.pop("runtime", "torch")
    scoring = options.pop("scoring", "model")
    detector = model if isinstance(model, Detector) else Detector.from_pretrained(str(model))
    apply_scoring(detector, scoring)
    apply_speed(detector, precision, runtime)
    meta = {
        "model": str(model) if not isinstance(model, Detector) else type(model).__name__,
        "untrained": detector.untrained,
        "image_size": detector.image_size,
        "templates": detector.prompt_templates(options.get("templates")),
        "template_mode": options.get("template_mode", "embed"),
        "vocabulary_size": len(categories),
        "detections_per_image": options.get("max_dets", 300),  # what the run kept; `max_dets`: what scoring counts
        "score_threshold": options.get("score_threshold", 0.0),
        "nms": options.get("nms"),
        "runtime": detector.runtime,
        "precision": detector.runtime_precision,
        "scoring": scoring,
    }
    skipped: list[dict] = []
    dets = predict_coco(detector.eval(), entries, images_dir, categories, skipped=skipped, **options)
    if skipped:
        meta["skipped_images"] = skipped
        warnings.warn(f"{len(skipped)} of {len(entries)} images could not be read and were skipped (listed above); "
                      "they count as images without detections", OvdetWarning, stacklevel=2)  # fmt: skip
    return dets, meta


def predict_images(
    model, images: str | Path, categories: str | Path | Sequence[str], predictions: str | Path,
    overwrite: bool = False, **options,
) -> list[dict] | None:
    """Batch inference on a plain folder (no ground truth): writes the COCO results to `predictions`,
    `<stem>.images.json` (a COCO json with the generated image ids and the categories, ready to be
    annotated) and `<stem>.per_image.json` (detections per file with names and xyxy boxes).

    categories: comma-separated names, a list of names, or a json (COCO json's `categories`, or a list).
    Every file carries ovdet's mark; one that exists without it is refused before any work unless `overwrite`.
    options: see `ovdet.inference.predict_coco`. Returns the records (None off rank 0).
    """
    from ovdet.inference import images_from_folder, meta_path, per_image_json, write_list, write_object, write_results

    path = Path(predictions)
    sidecars = [path.with_name(f"{path.stem}.{kind}.json") for kind in ("images", "per_image")]
    source = [categories] if isinstance(categories, (str, Path)) and str(categories).endswith(".json") else []
    for target in (path, meta_path(path), *sidecars, meta_path(sidecars[1])):
        check_output_path(target, "--predictions", inputs=source, overwrite=overwrite)
    cats = load_categories(categories)
    entries = images_from_folder(images)
    dets, meta = run_detector(model, entries, images, cats, **options)
    if dets is None:
        return None
    path = write_results(dets, predictions, {**meta, "images": str(images)})
    write_object({"images": entries, "categories": cats}, sidecars[0], indent=None)
    write_list(per_image_json(dets, entries, cats), sidecars[1])
    return dets


def detect_protocol(gt: dict) -> str:
    """'lvis' when the images carry LVIS's federated `neg_category_ids`, else 'coco'."""
    return "lvis" if any("neg_category_ids" in img for img in gt.get("images", [])) else "coco"


def resolve_split(spec, gt: dict, protocol: str) -> Split | None:
    """`load_split` checked against the json; LVIS without any split given uses rare = novel."""
    split = load_split(spec, gt["categories"])
    if split is None and protocol == "lvis":
        split = load_split("lvis", gt["categories"])
    return split


def vocabulary_categories(categories: Sequence[dict], split: Split | None, vocabulary: str = "split") -> list[dict]:
    """The categories queried: all, or (vocabulary="split" and a split listing its base) novel + base only."""
    if vocabulary not in ("split", "all"):
        raise ValueError(f"vocabulary must be 'split' or 'all', got {vocabulary!r}")
    cats = [{"id": c["id"], "name": c["name"]} for c in categories]
    if vocabulary == "all" or split is None or split.base is None:
        return cats
    return [c for c in cats if split.group_of(c["name"]) != "other"]


def load_categories(spec: str | Path | Sequence[str]) -> list[dict]:
    """Categories for a folder run: from names (ids 1..N) or a json file (COCO `categories` or a list)."""
    if isinstance(spec, (str, Path)) and str(spec).endswith(".json"):
        data = load_json(spec)
        items = data.get("categories", []) if isinstance(data, dict) else data
    else:
        items = str(spec).split(",") if isinstance(spec, (str, Path)) else list(spec)
    if not isinstance(items, list):
        raise ValueError(f"categories {str(spec)!r}: give a list of names or of {{id, name}} objects")
    items = [c for c in items if isinstance(c, dict) or str(c).strip()]
    for i, c in enumerate(items):
        if isinstance(c, dict) and not (type(c.get("id")) is int and isinstance(c.get("name"), str)):
            raise ValueError(f"categories {str(spec)!r}: entry {i} ({str(c)[:80]}) needs an integer 'id' and a 'name'")
    cats = [{"id": c["id"], "name": c["name"]} if isinstance(c, dict) else {"id": i, "name": str(c).strip()}
            for i, c in enumerate(items, start=1)]  # fmt: skip
    if not cats:
        raise ValueError(f"no category names in {spec!r}; pass names like 'cat,dog' or a json with 'categories'")
    return cats


def _score(gt: dict, protocol: str, dets, split, meta: dict, verbose: bool) -> EvalResult:
    if protocol == "lvis":
        from ovdet.evaluation.lvis_metrics import run_lvis

        return run_lvis(gt, dets, split, max_dets=EVAL_MAX_DETS["lvis"], meta=meta, verbose=verbose)
    return run_coco_ov(gt, dets, split, max_dets=EVAL_MAX_DETS["coco"], meta=meta, verbose=verbose)


def _check_outputs(annotations, written_predictions, out, report, inputs=(), overwrite: bool = False) -> None:
    """Refuse, before any work, an output that would overwrite an input or a file ovdet did not write."""
    from ovdet.evaluation.report import check_report_folder
    from ovdet.inference.results_file import meta_path

    sources = [annotations if not isinstance(annotations, dict) else None, *inputs]
    targets = [(out, "--out")]
    if written_predictions is not None:
        targets += [(written_predictions, "--predictions"), (meta_path(written_predictions), "--predictions")]
    paths = [Path(t) for t, _ in targets if t is not None]
    for target, option in targets:
        if target is not None:
            check_output_path(target, option, inputs=sources, overwrite=overwrite)
    if len({str(p.resolve()) for p in paths}) < len(paths):
        raise ValueError(f"the output files {[str(p) for p in paths]} must differ; give each its own path")
    if report is not None:
        check_report_folder(report, overwrite)


def _write_outputs(result: EvalResult, out, report) -> None:
    if out is not None:
        from ovdet.inference.results_file import write_object

        write_object(result.metrics, out)
    if report is not None:
        from ovdet.evaluation.report import write_report

        write_report(result, report)


def _load_annotations(annotations) -> dict:
    if isinstance(annotations, dict):
        return check_eval_json(annotations, "annotations")
    path = Path(annotations)
    if not str(annotations) or not path.is_file():
        raise ValueError(f"annotation file '{annotations}' not found; pass the COCO or LVIS json of the images")
    return check_eval_json(load_json(path), path)


def _require_images(images) -> Path:
    if images is None:
        raise ValueError("running a model needs the images folder; pass --images DIR")
    return Path(images)

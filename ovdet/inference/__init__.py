"""Batch inference: a detector over a COCO json's images (or a folder) to a COCO results json.

Names load on first use (PEP 562): `predict_coco` pulls torch and Lightning, which take
seconds to import, while reading a results file (`read_meta`) needs neither.
"""

import importlib

_EXPORTS = {
    "predict_coco": "batch",
    "to_coco_results": "coco_results",
    "per_image_json": "coco_results",
    "sort_results": "coco_results",
    "ImageDataset": "image_dataset",
    "images_from_coco": "image_dataset",
    "images_from_folder": "image_dataset",
    "CocoPredictModule": "predict_module",
    "meta_path": "results_file",
    "read_meta": "results_file",
    "write_list": "results_file",
    "write_object": "results_file",
    "write_results": "results_file",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ovdet.inference' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ovdet.inference.{_EXPORTS[name]}"), name)

"""Batch `CocoDetection` samples: stack images, pad the per-image vocabularies with a mask."""

from __future__ import annotations

import torch


def collate_detection(samples: list[dict]) -> dict:
    """Samples -> one batch.

    Returns a dict with
        pixel_values: [B, 3, S, S];
        queries: B lists of prompt texts (unpadded; the module embeds them);
        query_mask: [B, Q] bool, True for real queries, Q = the longest list;
        query_category_ids: B lists, the category id behind each query;
        targets: B dicts of `labels` [N] (query index) and `boxes_cxcywh` [N, 4], the criterion's contract;
        image_ids: B ints; orig_sizes: B (width, height).
    """
    if not samples:
        raise ValueError("cannot collate an empty batch")
    num_queries = max(len(s["queries"]) for s in samples)
    query_mask = torch.zeros(len(samples), num_queries, dtype=torch.bool)  # [B, Q]
    for i, s in enumerate(samples):
        query_mask[i, : len(s["queries"])] = True
    return {
        "pixel_values": torch.stack([s["pixel_values"] for s in samples]),  # [B, 3, S, S]
        "queries": [list(s["queries"]) for s in samples],
        "query_mask": query_mask,
        "query_category_ids": [list(s["query_category_ids"]) for s in samples],
        "targets": [{"labels": s["labels"], "boxes_cxcywh": s["boxes_cxcywh"]} for s in samples],
        "image_ids": [int(s["image_id"]) for s in samples],
        "orig_sizes": [tuple(s["orig_size"]) for s in samples],
    }

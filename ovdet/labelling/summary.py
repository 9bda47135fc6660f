"""The per-class summary `ovdet label` prints: how many boxes each query got and how sure they were."""

from __future__ import annotations

import statistics

from ovdet.labelling.label_set import LabelSet


def class_summary(labels: LabelSet) -> list[dict]:
    """Per category, in query order: `name`, `count`, `images` holding one, score `min`, `median`, `max`
    (None without boxes)."""
    rows = []
    for index, name in enumerate(labels.categories):
        scores = [d.score for im in labels.images for d in im.detections if d.label == index]
        images = sum(any(d.label == index for d in im.detections) for im in labels.images)
        spread = (min(scores), statistics.median(scores), max(scores)) if scores else (None, None, None)
        rows.append({"name": name, "count": len(scores), "images": images,
                     **dict(zip(("min", "median", "max"), spread))})
    return rows


def print_summary(labels: LabelSet, console=None) -> None:
    """The summary as a table (rich), with the images left without any box."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    empty = sum(not im.detections for im in labels.images)
    table = Table(title=f"{len(labels.images)} images labelled, {empty} without any box", title_justify="left")
    for col in ("class", "boxes", "images", "score min", "median", "max"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for row in class_summary(labels):
        spread = ["-"] * 3 if row["count"] == 0 else [f"{row[k]:.3f}" for k in ("min", "median", "max")]
        table.add_row(escape(row["name"]), str(row["count"]), str(row["images"]), *spread)
    console.print(table)

"""The formats `ovdet label` writes, and the one check of their files before the model loads."""

from __future__ import annotations

from pathlib import Path

from ovdet.errors import OvdetError
from ovdet.labelling import coco_writer, label_studio_writer, voc_writer, yolo_writer
from ovdet.labelling.label_set import LabelSet

WRITERS = {"coco": coco_writer, "yolo": yolo_writer, "voc": voc_writer, "label-studio": label_studio_writer}
KEYED_BY_STEM = ("yolo", "voc")  # a label file per image, named after the image's stem


def check_formats(formats: list[str]) -> list[str]:
    """The --format values, each once, in the order given; an unknown one is one line."""
    unknown = [f for f in formats if f not in WRITERS]
    if unknown:
        raise OvdetError(f"--format {unknown[0]!r} is not a format ovdet label writes; use one of {', '.join(WRITERS)}")
    return list(dict.fromkeys(formats))


def check_targets(out: Path, formats: list[str], file_names: list[str], overwrite: bool) -> None:
    """Refuse, in one line, a file the run would replace that ovdet did not write (unless `overwrite`)."""
    if out.exists() and not out.is_dir():
        raise OvdetError(f"--out '{out}' is a file; name a folder for the dataset")
    for name in formats:
        writer = WRITERS[name]
        is_ours = writer.ours(out)
        for target in writer.targets(out, file_names):
            if overwrite or not (target.exists() or target.is_symlink()) or is_ours(target):
                continue
            if target.is_dir():
                raise OvdetError(f"--out: '{target}' ({name}) is a folder; move it or choose another --out")
            raise OvdetError(
                f"--out: '{target}' ({name}) exists and was not written by ovdet; ovdet replaces only files it "
                "wrote: choose another --out or pass --overwrite to replace it"
            )


def write_formats(labels: LabelSet, out: Path, formats: list[str], url_prefix: str) -> list[Path]:
    """Every format's files; returns them (the Label Studio URL prefix goes to that writer only)."""
    written = []
    for name in formats:
        if name == "label-studio":
            written += label_studio_writer.write(labels, out, url_prefix)
        else:
            written += WRITERS[name].write(labels, out)
    return written

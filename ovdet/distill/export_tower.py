"""Write the distilled tower as a CLIP folder when the dense-distillation stage ends.

The folder is the CLIP in its own format (`save_clip`), so `Detector.from_clip(DIR)`, `load_clip(DIR)` and
`ovdet train model.clip=DIR` take it, plus `ovdet_tower.json`: ovdet's mark, the stage, the source CLIP and
the files written, so a later run replaces exactly those files and nothing it did not write.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L

from ovdet.file_mark import is_mark, marked
from ovdet.safe_write import check_replaceable, folder_entries, replace_folder

MARKER = "ovdet_tower.json"
KIND = "an ovdet tower folder"


def tower_files(folder: Path) -> set[str] | None:
    """The files ovdet wrote into `folder` (its marker and the files the marker lists); None if not ours."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not is_mark(marker.get("written_by")) or not isinstance(marker.get("files"), list):
        return None
    return {MARKER, *(f for f in marker["files"] if isinstance(f, str))}


def check_tower_target(path: str | Path) -> None:
    """Refuse now, in one line, a folder `write_tower` would refuse after training (not empty and not ours)."""
    check_replaceable(Path(path), tower_files, KIND)


def write_tower(clip, folder: str | Path, source: str) -> Path:
    """Save `clip` (a `LoadedCLIP`) into a temp folder beside `folder`, add the marker, then swap it in."""
    from ovdet.towers.clip_saving import save_clip

    folder = Path(folder)
    with replace_folder(folder, tower_files, KIND) as tmp:
        save_clip(clip, tmp)
        marker = marked({"stage": "dense_distill", "source": source, "files": folder_entries(tmp)})
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return folder


class ExportTower(L.Callback):
    """At the end of `fit` (global rank 0), write the student tower to `dirpath` (`${paths.output_dir}/tower`).

    Args:
        dirpath: the tower folder; a non-empty folder ovdet did not write is refused here, before training.
    """

    def __init__(self, dirpath: str | Path):
        self.dirpath = Path(dirpath)
        check_tower_target(self.dirpath)
        self.exported: Path | None = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        clip = getattr(pl_module, "loaded_clip", None)
        if clip is None:
            raise TypeError(f"ExportTower needs the module of ovdet.distill.stage.distill_module, got "
                            f"{type(pl_module).__name__}")
        if trainer.is_global_zero:
            self.exported = write_tower(clip, self.dirpath, getattr(pl_module, "clip_source", clip.reference))

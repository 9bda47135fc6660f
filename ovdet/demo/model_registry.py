"""The models the demo offers: found by the server, picked by name, never opened from a user's path."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path

from ovdet.models.detector import Detector
from ovdet.models.detector_io import CONFIG_NAME

DEFAULT_NAME = "default (embedded ShapeWorld model)"


class ModelRegistry:
    """Names -> model locations chosen on the server; detectors loaded on first use and kept.

    A name from the browser is only a key into this table: anything else is refused, so no path a
    user types or sends ever reaches the file system.

    Args:
        models: picker name -> model folder or CLIP id, as the server found them.
        device: torch device the detectors run on.
        max_loaded: detectors kept in memory at once (least recently used goes first).
    """

    def __init__(self, models: dict[str, str], device: str = "cpu", max_loaded: int = 2):
        if not models:
            raise ValueError("the demo has no model to offer; pass --model PATH_OR_ID or --models-dir DIR")
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be >= 1, got {max_loaded}")
        self.models = dict(models)
        self.device = device
        self.max_loaded = max_loaded
        self._loaded: OrderedDict[str, Detector] = OrderedDict()
        self._lock = threading.Lock()
        self.precision: str | None = None  # `ovdet demo --precision` / `--runtime`, applied to each model loaded
        self.runtime = "torch"

    @classmethod
    def discover(cls, model: str | None, default_model: Path, search_dirs=(), device: str = "cpu") -> "ModelRegistry":
        """The --model given (or the embedded default model), then every ovdet model folder found
        in `search_dirs` (the folder itself and its sub-folders, one level deep)."""
        models: dict[str, str] = {}
        if model is not None:
            models[Path(model).name or model] = model
        elif (default_model / CONFIG_NAME).is_file():
            models[DEFAULT_NAME] = str(default_model)
        for folder in map(Path, search_dirs):
            if not folder.is_dir():
                raise ValueError(f"--models-dir {folder} is not a folder")
            for candidate in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
                if is_model_folder(candidate) and str(candidate) not in models.values():
                    name = candidate.name
                    if name in models:  # two folders of one name: say which parent
                        name = f"{candidate.parent.name}/{candidate.name}"
                    models[name] = str(candidate)
        return cls(models, device)

    @property
    def names(self) -> list[str]:
        return list(self.models)

    @property
    def default(self) -> str:
        return self.names[0]

    def threshold(self, name: str, fallback: float = 0.6) -> float:
        """The score threshold a model folder names in its config.json (the embedded model: its tuned one),
        read without loading the model; `fallback` for folders without one (OWL, bare CLIP) or hub ids."""
        try:
            value = json.loads((Path(self.models[name]) / CONFIG_NAME).read_text(encoding="utf-8")).get("threshold")
        except (KeyError, OSError, ValueError, AttributeError):
            return fallback
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
        return float(value) if ok else fallback

    def get(self, name: str) -> Detector:
        """The detector behind a picker name, loaded once; ValueError for any other value."""
        if not isinstance(name, str) or name not in self.models:
            shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:79] + "…"  # never echo 10k characters
            raise ValueError(f"unknown model {shown}; pick one of {self.names}")
        with self._lock:
            if name not in self._loaded:
                detector = Detector.from_pretrained(self.models[name]).to(self.device).eval()
                if self.precision is not None or self.runtime != "torch":
                    from ovdet.cli.options import apply_speed

                    apply_speed(detector, self.precision, self.runtime)
                self._loaded[name] = detector
                while len(self._loaded) > self.max_loaded:
                    self._loaded.popitem(last=False)
            self._loaded.move_to_end(name)
            return self._loaded[name]


def is_model_folder(folder: Path) -> bool:
    """A saved ovdet model: config.json with model_type 'ovdet'."""
    try:
        return json.loads((folder / CONFIG_NAME).read_text()).get("model_type") == "ovdet"
    except (OSError, ValueError, AttributeError):
        return False

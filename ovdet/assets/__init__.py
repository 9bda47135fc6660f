"""Files that ship with ovdet: the embedded default model (trained in ShapeWorld) and a bundled scene."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
DEFAULT_MODEL = ASSETS / "default_model"
SCENE = ASSETS / "scene.png"


def resolve_model(model: str | None) -> str:
    """The model a command uses: the one named, else the embedded default model."""
    if model is not None:
        return model
    if not (DEFAULT_MODEL / "config.json").is_file():
        raise ValueError(f"no embedded default model at {DEFAULT_MODEL}; pass --model PATH_OR_ID")
    return str(DEFAULT_MODEL)

"""Example scenes for the demo: the bundled scene and a few ShapeWorld scenes drawn from fixed seeds."""

from __future__ import annotations

from pathlib import Path

BUNDLED_SCENE = Path(__file__).resolve().parents[1] / "assets" / "scene.png"
BUNDLED_QUERIES = "star, red circle, square"
# Seeds drawn like the bundled scene; the same seed always gives the same pixels.
EXTRA_SEEDS = (7, 23)


def example_scenes(folder: Path) -> list[list[str]]:
    """[image path, queries] rows: the bundled scene, then scenes rendered into `folder` (server-made)."""
    from ovdet.data.shapeworld import SceneConfig, render_scene

    rows = [[str(BUNDLED_SCENE), BUNDLED_QUERIES]] if BUNDLED_SCENE.is_file() else []
    config = SceneConfig(min_size=320, max_size=320, min_objects=4, max_objects=7)
    folder.mkdir(parents=True, exist_ok=True)
    for seed in EXTRA_SEEDS:
        image, scene = render_scene(seed, config)
        path = folder / f"shapeworld_{seed}.png"
        image.save(path)
        names = dict.fromkeys(o.shape for o in scene.objects)  # each shape present, in drawing order
        first = scene.objects[0]
        rows.append([str(path), ", ".join([f"{first.color} {first.shape}", *names][:4])])
    return rows

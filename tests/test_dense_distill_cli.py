"""`ovdet train experiment=dense_distill model.clip=DIR data.images=DIR`: the label-free stage end to end."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image
from test_train_cli import error_lines, ovdet

from ovdet.distill.export_tower import MARKER
from ovdet.distill.region_embedding import dense_region_embeddings
from ovdet.distill.region_tower import region_tower
from ovdet.file_mark import is_mark
from ovdet.models.detector import Detector
from ovdet.towers.loader import load_clip

SIZE = 64


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    gen = torch.Generator().manual_seed(0)
    for i in range(4):
        pixels = (torch.rand(48 + 8 * i, 64, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    return folder


def _train(clip, images, run, *extra):
    return ovdet("train", "experiment=dense_distill", f"model.clip={clip}", f"model.image_size={SIZE}",
                 f"data.images={images}", "data.batch_size=2", "trainer.max_steps=3", f"hydra.run.dir={run}",
                 "module.trainable_layers=1",  # the tiny ViT has 2 blocks (the default trains 4)
                 *extra, cwd=run.parent)


def _regions(clip_dir) -> torch.Tensor:
    tower = region_tower(load_clip(clip_dir)).eval()
    x = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    boxes = [torch.tensor([[0.0, 0.0, 32.0, 32.0], [16.0, 16.0, 64.0, 48.0]])]
    with torch.no_grad():
        return dense_region_embeddings(tower, x, boxes)  # [2, E]


def test_dense_distill_writes_a_tower_that_loads_and_resumes_as_complete(tiny_clip_dir, images, tmp_path):
    run = tmp_path / "run"
    first = _train(tiny_clip_dir, images, run, "ckpt_path=last")
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    tower = run / "tower"
    assert f"tower folder: {tower}" in first.stdout
    marker = json.loads((tower / MARKER).read_text())
    assert is_mark(marker["written_by"]) and marker["stage"] == "dense_distill"
    assert marker["source"] == str(tiny_clip_dir)
    assert isinstance(Detector.from_clip(str(tower), image_size=SIZE), Detector)
    assert not torch.allclose(_regions(tower), _regions(tiny_clip_dir), atol=1e-6)

    again = _train(tiny_clip_dir, images, run, "ckpt_path=last")
    assert again.returncode == 0 and "run already complete" in again.stdout, (again.stdout + again.stderr)[-3000:]
    assert f"tower folder: {tower}" in again.stdout

    # A run that died after its last checkpoint but before writing the tower: the complete run writes it.
    distilled = _regions(tower)
    shutil.rmtree(tower)
    rebuilt = _train(tiny_clip_dir, images, run, "ckpt_path=last")
    assert rebuilt.returncode == 0 and "wrote the tower folder from it" in rebuilt.stdout, rebuilt.stderr[-3000:]
    torch.testing.assert_close(_regions(tower), distilled)


def test_names_term_runs_from_the_command_line_and_needs_names(tiny_clip_dir, images, tmp_path):
    done = _train(tiny_clip_dir, images, tmp_path / "named", "module.names=[circle,square,star]", "module.names_weight=1.0")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert not torch.allclose(_regions(tmp_path / "named" / "tower"), _regions(tiny_clip_dir), atol=1e-6)
    refused = _train(tiny_clip_dir, images, tmp_path / "unnamed", "module.names_weight=1.0")
    assert refused.returncode == 2 and "names_weight=1.0" in refused.stderr, refused.stderr[-3000:]


def test_missing_images_folder_is_one_line_before_the_model_loads(tmp_path):
    run = tmp_path / "run"
    missing = tmp_path / "no_such_images"
    result = _train(tmp_path / "no_such_clip", missing, run)  # the CLIP is missing too: it must not be reached
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "data.images" in lines[0] and str(missing) in lines[0], result.stderr[-2000:]
    assert not run.exists()


def test_foreign_tower_folder_is_refused_before_training(tiny_clip_dir, images, tmp_path):
    run = tmp_path / "run"
    (run / "tower").mkdir(parents=True)
    (run / "tower" / "notes.txt").write_text("mine")
    result = _train(tiny_clip_dir, images, run)
    lines = error_lines(result.stderr)
    assert result.returncode != 0 and len(lines) == 1 and "tower" in lines[0], result.stderr[-2000:]
    assert (run / "tower" / "notes.txt").read_text() == "mine" and not (run / "checkpoints").exists()


def test_datamodule_batches_folder_images_or_shapeworld_scenes(images, tmp_path):
    from ovdet.distill.image_folder_data import ImageFolderDataModule, check_image_folder
    from ovdet.errors import OvdetError

    for source in (str(images), None):  # None: ShapeWorld scenes rendered on the fly
        dm = ImageFolderDataModule(source, image_size=SIZE, batch_size=2, num_scenes=3)
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        assert batch["pixel_values"].shape == (2, 3, SIZE, SIZE) and batch["image_hw"].shape == (2, 2)
        assert (batch["image_hw"] > 0).all() and (batch["image_hw"] <= SIZE + 1e-4).all()
        assert torch.isclose(batch["image_hw"].max(dim=1).values, torch.tensor(float(SIZE))).all()
    (tmp_path / "empty").mkdir()
    with pytest.raises(OvdetError, match="holds no images"):
        check_image_folder(tmp_path / "empty")

"""The end-to-end runs every CLIP family must pass, in this process (so test-registered timm towers exist):
`ovdet train` fast_dev_run, `ovdet export`, and the dense-distillation stage."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from ovdet.cli.main import main
from ovdet.distill.region_embedding import dense_region_embeddings
from ovdet.distill.region_tower import region_tower
from ovdet.models.detector import Detector
from ovdet.towers.loader import load_clip


def fast_dev_run(clip: Path, tmp_path: Path) -> Detector:
    """`ovdet train model.clip=CLIP debug=fast_dev_run` on a synthetic COCO set; returns the trained detector."""
    from synthetic_coco import write_synthetic_coco
    from test_training import compose_train

    from ovdet.training.run import train

    json_path = write_synthetic_coco(tmp_path / "data", num_images=4, seed=0)
    cfg = compose_train(clip, tmp_path / "out", (json_path, tmp_path / "data" / "images"), "debug=fast_dev_run",
                        "logger=none")
    assert torch.isfinite(torch.tensor(train(cfg)["train/loss"]))
    return Detector.from_pretrained(tmp_path / "out" / "detector")


def cli_export(clip: Path, tmp_path: Path) -> dict:
    """`ovdet export --format onnx --model CLIP`; returns the check it writes next to the file."""
    out = tmp_path / "model.onnx"
    assert main(["export", "--format", "onnx", "--model", str(clip), "--out", str(out), "-q", "cat", "-q", "dog",
                 "--runs", "1"]) == 0  # fmt: skip
    return json.loads(out.with_suffix(".json").read_text())


def _regions(clip: Path, size: int) -> torch.Tensor:
    tower = region_tower(load_clip(clip)).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    boxes = [torch.tensor([[0.0, 0.0, size / 2, size / 2], [size / 4, size / 4, size, size * 0.75]])]
    with torch.no_grad():
        return dense_region_embeddings(tower, x, boxes)  # [2, E]


def dense_distill_run(clip: Path, tmp_path: Path, size: int) -> Path:
    """`ovdet train experiment=dense_distill model.clip=CLIP` for 3 steps on 4 images; returns the tower folder,
    checked to load and to pool boxes differently from the tower it started from."""
    images = tmp_path / "images"
    images.mkdir()
    gen = torch.Generator().manual_seed(0)
    for i in range(4):
        pixels = (torch.rand(size - 8 * i, size, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(images / f"img{i}.png")
    run = tmp_path / "run"
    assert main(["train", "experiment=dense_distill", f"model.clip={clip}", f"model.image_size={size}",
                 f"data.images={images}", "data.batch_size=2", "trainer.max_steps=3", f"hydra.run.dir={run}",
                 "module.trainable_layers=1"]) == 0  # fmt: skip
    tower = run / "tower"
    assert isinstance(Detector.from_clip(str(tower), image_size=size), Detector)
    assert not torch.allclose(_regions(tower, size), _regions(clip, size), atol=1e-6)
    return tower

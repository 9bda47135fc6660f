"""The checks every CLIP family's tower folder must pass once it loads (issue P): a detector on it saves and
reloads to the same outputs and runs at every precision, `ovdet detect` runs it with the untrained-head banner,
`ovdet train` runs a fast_dev_run on it, `ovdet export` writes an ONNX file that agrees with torch, and the
dense-distillation stage lowers its loss and writes the tower back in the library's own format (the end-to-end
runs themselves are `tower_runs`, shared with the open_clip families)."""

from __future__ import annotations

import copy
import json
from functools import partial
from pathlib import Path

import lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader

QUERIES = ["star", "red circle", "ring"]


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Every weight moved by 0.05 * randn and BatchNorm statistics made non-trivial, so a wrong mapping shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.add_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.mul_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def calibrate_batchnorm(model: torch.nn.Module, pixels: torch.Tensor) -> None:
    """BatchNorm statistics measured on `pixels`, as a trained tower has them: with the init's (mean 0, var 1)
    every image gives nearly the same embedding, and crops and regions agree before any distillation."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.momentum = None  # a plain average over the calibration batch
        bn.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(pixels)
    model.eval()


def check_detector_round_trip(clip_dir: Path, tmp_path: Path, image_size: int, fmt: str) -> None:
    """A new head on the tower (its own training state moved) survives save_pretrained / from_pretrained."""
    from ovdet.models.detector import Detector

    torch.manual_seed(0)
    det = Detector.from_pretrained(clip_dir)
    assert det.untrained and det.clip.format == fmt
    det = Detector.from_clip(str(clip_dir), image_size=image_size)
    with torch.no_grad():
        for p in list(det.head.parameters()) + list(det.backbone.merge_norm.parameters()):
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        out = det.eval()(x, det.encode_queries(QUERIES))
    path = det.save_pretrained(tmp_path / "det")
    assert json.loads((path / "clip" / "config.json").read_text())["model_type"] == fmt
    again = Detector.from_pretrained(path)
    assert again.clip.format == fmt
    with torch.no_grad():
        back = again(x, again.encode_queries(QUERIES))
    for key in ("pred_boxes", "logits", "objectness", "region_embeds"):
        torch.testing.assert_close(back[key], out[key], rtol=0, atol=1e-5, msg=key)


def check_precisions(clip_dir: Path, image_size: int) -> None:
    """bf16 and int8 (`set_precision`) run the tower and give finite scores; fp32 then gives the fp32 outputs back."""
    from ovdet.models.detector import Detector

    det = Detector.from_clip(str(clip_dir), image_size=image_size).eval()
    x = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    queries = det.encode_queries(QUERIES)
    with torch.no_grad():
        reference = det(x, queries)["logits"]
        for precision in ("bf16", "int8"):
            assert det.set_precision(precision) == precision
            assert torch.isfinite(det(x, queries)["logits"]).all(), precision
        det.set_precision("fp32")
        torch.testing.assert_close(det(x, queries)["logits"], reference, rtol=0, atol=1e-5)


def check_detect_cli(clip_dir: Path, tmp_path: Path, capsys) -> None:
    """`ovdet detect --model DIR` on a bare tower folder: the untrained-head banner, exit 0."""
    from ovdet.cli.main import main
    from ovdet.models.detection import UNTRAINED_BANNER

    image = tmp_path / "scene.png"
    Image.fromarray((torch.rand(40, 56, 3, generator=torch.Generator().manual_seed(0)) * 255).byte().numpy()).save(image)
    assert main(["detect", str(image), "-q", "cat", "--model", str(clip_dir), "--threshold", "0",
                 "--out", str(tmp_path / "out.json")]) == 0
    assert UNTRAINED_BANNER in capsys.readouterr().err
    assert json.loads((tmp_path / "out.json").read_text())[0]["untrained"] is True


def check_fast_dev_run_and_export(clip_dir: Path, tmp_path: Path, fmt: str) -> None:
    """`ovdet train model.clip=DIR` fast_dev_run writes a detector that reloads; `ovdet export` checks it in onnxruntime."""
    from tower_runs import cli_export, fast_dev_run

    detector = fast_dev_run(clip_dir, tmp_path)
    assert detector.clip.format == fmt and detector.info["untrained"] is False
    check = cli_export(tmp_path / "out" / "detector", tmp_path)["check"]
    assert max(check["max_abs_diff"].values()) < 1e-4, check


def check_distillation(clip_dir: Path, tmp_path: Path, size: int, trainable_layers: int = 1, steps: int = 30) -> None:
    """Issue N's stage on the tower: in process, the loss falls, the teacher stays, the tower is saved and reloads
    as trained; then `ovdet train experiment=dense_distill model.clip=DIR` writes a tower folder that loads."""
    from ovdet.distill.module import DenseDistillModule
    from ovdet.distill.random_boxes import grid_boxes
    from ovdet.distill.region_embedding import dense_region_embeddings
    from ovdet.distill.region_tower import region_tower
    from ovdet.towers.clip_saving import save_clip
    from ovdet.towers.loader import load_clip
    from test_dense_distill import _scenes

    torch.manual_seed(0)
    clip = load_clip(clip_dir)
    tower = region_tower(clip)
    pixels, _, _, hw, _ = _scenes(4, size)  # ShapeWorld scenes, padded square
    module = DenseDistillModule(tower, partial(torch.optim.AdamW, lr=3e-3, weight_decay=0.0),
                                trainable_layers=trainable_layers, max_split=3, seed=0)
    teacher = copy.deepcopy(module.teacher.state_dict())
    fixed = [grid_boxes(float(h), float(w), 2, 2) for h, w in hw.tolist()]
    with torch.no_grad():
        before = float(module.distill_loss(pixels, fixed))
    data = [{"pixel_values": pixels[i : i + 2], "image_hw": hw[i : i + 2]} for i in range(0, len(pixels), 2)]
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", enable_progress_bar=False, logger=False,
                        enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(module, DataLoader(data, batch_size=None, shuffle=False))
    with torch.no_grad():
        after = float(module.distill_loss(pixels, fixed))
    assert trainer.global_step == steps and after < 0.9 * before, (before, after)
    assert all(torch.equal(v, module.teacher.state_dict()[k]) for k, v in teacher.items())
    assert module.student.backbone.vision is clip.backbone.vision
    save_clip(clip, tmp_path / "distilled")
    reloaded = region_tower(load_clip(tmp_path / "distilled"))
    boxes = [torch.tensor([[0.0, 0.0, size * 0.6, size * 0.8], [size * 0.1, size * 0.2, size, size]])] * 2
    with torch.no_grad():
        torch.testing.assert_close(dense_region_embeddings(reloaded.eval(), pixels[:2], boxes),
                                   dense_region_embeddings(module.student.eval(), pixels[:2], boxes))
    from tower_runs import dense_distill_run

    (tmp_path / "cli").mkdir()
    dense_distill_run(clip_dir, tmp_path / "cli", size)

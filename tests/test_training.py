import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from synthetic_coco import write_synthetic_coco

from ovdet.cli.main import main
from ovdet.cli.train import config_dir
from ovdet.data.coco_detection import CocoDetection
from ovdet.data.collate import collate_detection
from ovdet.data.transforms import build_transform
from ovdet.losses import HungarianMatcher, SetCriterion
from ovdet.models.detector import Detector
from ovdet.training import DetectionModule, ValidationAP, export_from_checkpoint, warmup_cosine
from ovdet.training.run import train

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run best on one thread


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """8 images of squares and circles (base) and triangles (novel), all annotated."""
    folder = tmp_path_factory.mktemp("data")
    return write_synthetic_coco(folder, num_images=8, seed=0), folder / "images"


def data_overrides(json_path: Path, images: Path) -> list[str]:
    return [f"data.train_json={json_path}", f"data.train_images={images}",
            f"data.val_json={json_path}", f"data.val_images={images}"]


def compose_train(clip: Path, out: Path, data_paths, *overrides: str):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=["experiment=smoke", f"model.clip={clip}", f"paths.output_dir={out}",
                                           *data_overrides(*data_paths), *overrides])


class StepProbe(L.Callback):
    """Records the global step at which training starts and ends (built by Hydra from a config override)."""

    seen: list = []

    def on_train_start(self, trainer, pl_module):
        StepProbe.seen.append(("start", trainer.global_step))

    def on_train_end(self, trainer, pl_module):
        StepProbe.seen.append(("end", trainer.global_step))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fast_dev_run_in_process_exports_a_loadable_trained_detector(precision, tiny_clip_dir, data, tmp_path):
    cfg = compose_train(tiny_clip_dir, tmp_path, data, "debug=fast_dev_run", f"trainer.precision={precision}")
    metrics = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert {"val/loss", "val/AP50_novel", "val/AP50_base", "val/AP50_all", "val/AP"} <= set(metrics)
    detector = Detector.from_pretrained(tmp_path / "detector")
    assert detector.info["untrained"] is False and detector.info["global_step"] == 1
    assert detector.info["recipe"]["model"]["clip"] == str(tiny_clip_dir)
    assert detector.detect(first_image(data), ["square"], threshold=0.0, max_detections=3)[0]


def first_image(data):
    json_path, images = data
    return images / json.loads(json_path.read_text())["images"][0]["file_name"]


@pytest.mark.slow
def test_fast_dev_run_through_the_ovdet_train_cli(tiny_clip_dir, data, tmp_path):
    overrides = ["experiment=smoke", "debug=fast_dev_run", f"model.clip={tiny_clip_dir}", *data_overrides(*data),
                 f"hydra.run.dir={tmp_path / 'run'}"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "ovdet.cli.main", "train", *overrides], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "detector" / "config.json").is_file()
    assert "train/loss" in proc.stdout + proc.stderr


def test_ovdet_train_in_process_runs_hydra_and_restores_argv(tiny_clip_dir, data, tmp_path):
    argv = list(sys.argv)
    overrides = ["experiment=smoke", "debug=fast_dev_run", f"model.clip={tiny_clip_dir}", *data_overrides(*data),
                 f"hydra.run.dir={tmp_path}"]
    assert main(["train", *overrides]) == 0
    assert sys.argv == argv
    assert Detector.from_pretrained(tmp_path / "detector").info["untrained"] is False


def test_text_tower_frozen_backbone_blocks_at_a_lower_lr(tiny_clip_dir, data):
    detector = Detector.from_clip(str(tiny_clip_dir), image_size=32, trainable_layers=1)
    module = DetectionModule(detector, SetCriterion(HungarianMatcher()),
                             functools.partial(torch.optim.AdamW, lr=1e-3), backbone_lr_scale=0.1)
    optimizer = module.configure_optimizers()
    assert [(g["name"], g["lr"]) for g in optimizer.param_groups] == [("head", 1e-3), ("backbone", pytest.approx(1e-4))]
    grouped = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not any(id(p) in grouped for p in detector.text_encoder.parameters())
    before = {k: v.clone() for k, v in detector.state_dict().items()}
    ds = CocoDetection(*data, build_transform(32, detector.backbone.image_mean, detector.backbone.image_std),
                       max_queries=2)
    module.train()
    _, losses = module.shared_step(collate_detection([ds[0], ds[1]]), "single")
    losses["loss"].backward()
    optimizer.step()
    after = detector.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith("text_encoder.") for k in changed)
    assert any(k.startswith("backbone.vision.encoder.layers.1.") for k in changed)  # the unfrozen last block
    assert not any(k.startswith("backbone.vision.encoder.layers.0.") for k in changed)
    assert any(k.startswith("head.") for k in changed)


def test_resume_continues_at_the_saved_step_and_checkpoints_export(tiny_clip_dir, data, tmp_path):
    first = tmp_path / "first"
    train(compose_train(tiny_clip_dir, first, data, "trainer.max_epochs=1", "data.batch_size=4", "logger=none"))
    ckpt = first / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    StepProbe.seen.clear()
    train(compose_train(tiny_clip_dir, tmp_path / "second", data, "trainer.max_epochs=2", "data.batch_size=4",
                        "logger=none", f"ckpt_path={ckpt}", "+callbacks.probe._target_=test_training.StepProbe"))
    assert StepProbe.seen == [("start", 2), ("end", 4)]  # 8 images / 4 per batch = 2 steps per epoch

    assert main(["export-ckpt", str(ckpt), str(tmp_path / "from_ckpt")]) == 0
    a, b = Detector.from_pretrained(first / "detector"), Detector.from_pretrained(tmp_path / "from_ckpt")
    assert b.info["untrained"] is False and b.info["global_step"] == 2
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out_a, out_b = a(x, a.encode_queries(["square"])), b(x, b.encode_queries(["square"]))
    assert torch.allclose(out_a["logits"], out_b["logits"]) and torch.allclose(out_a["pred_boxes"], out_b["pred_boxes"])


def test_export_from_a_foreign_checkpoint_raises(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not an ovdet training checkpoint"):
        export_from_checkpoint(tmp_path / "other.ckpt", tmp_path / "out")


def test_overfit_eight_images_reaches_ap50_of_90(tiny_clip_dir, tmp_path):
    folder = tmp_path / "data"
    json_path = write_synthetic_coco(folder, num_images=8, seed=0, classes=("square", "circle"))
    cfg = compose_train(
        tiny_clip_dir, tmp_path / "out", (json_path, folder / "images"), "debug=overfit", "model.image_size=32",
        "model.trainable_layers=2", "module.backbone_lr_scale=1.0", "module.optimizer.lr=2e-3", "data.batch_size=8",
        "trainer.max_epochs=150", "trainer.check_val_every_n_epoch=150", "logger=none", "callbacks=none",
    )
    metrics = train(cfg)
    assert metrics["val/AP50_base"] >= 90.0, metrics  # percent, pycocotools via evaluate_coco_ov


def test_validation_ap_is_perfect_for_perfect_detections(data):
    json_path, images = data
    ds = CocoDetection(json_path, images, build_transform(64, (0.5,) * 3, (0.5,) * 3), categories="all")
    batch = collate_detection([ds[i] for i in range(len(ds))])
    num_regions, num_queries = 10, len(batch["queries"][0])
    boxes = torch.full((len(ds), num_regions, 4), 0.05)
    logits = torch.full((len(ds), num_regions, num_queries), -10.0)
    for b, target in enumerate(batch["targets"]):
        n = len(target["labels"])
        boxes[b, :n] = target["boxes_cxcywh"]
        logits[b, torch.arange(n), target["labels"]] = 10.0
    val_ap = ValidationAP()
    val_ap.update({"pred_boxes": boxes, "logits": logits}, batch)
    metrics = val_ap.compute(ds.coco_gt, ds.split)
    assert metrics["AP50_all"] == pytest.approx(100.0) and metrics["AP"] > 90.0


def test_warmup_cosine_schedule():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = warmup_cosine(optimizer, total_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    lrs = []
    for _ in range(110):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.55) and optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    with pytest.raises(ValueError):
        warmup_cosine(optimizer, total_steps=0)

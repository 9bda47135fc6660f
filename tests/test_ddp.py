import os
import subprocess
import sys

import pytest
from synthetic_coco import write_synthetic_coco

from ovdet.models.detector import Detector


@pytest.mark.slow
def test_ddp_with_two_cpu_processes_shards_the_data(tiny_clip_dir, tmp_path):
    """`ovdet train trainer=ddp` on 2 gloo CPU processes: Lightning relaunches the CLI for rank 1."""
    json_path = write_synthetic_coco(tmp_path / "data", num_images=8, seed=0)
    images = tmp_path / "data" / "images"
    run_dir = tmp_path / "run"
    overrides = [
        "experiment=smoke", f"model.clip={tiny_clip_dir}",
        f"data.train_json={json_path}", f"data.train_images={images}",
        f"data.val_json={json_path}", f"data.val_images={images}",
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
        "trainer.max_epochs=1", "trainer.limit_train_batches=null", "data.batch_size=2",
        f"hydra.run.dir={run_dir}",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "ovdet.cli.main", "train", *overrides], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=500)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "distributed_backend=gloo" in log and "MEMBER: 2/2" in log
    assert (run_dir / "train_ddp_process_1.log").is_file()  # rank 1 ran as its own process
    detector = Detector.from_pretrained(run_dir / "detector")
    # 8 images, 2 per batch, split over 2 processes: 2 optimizer steps per epoch, not 4.
    assert detector.info["global_step"] == 2

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

COCO128 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco128-val"


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    from tiny_clip import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def coco128():
    if not (COCO128 / "instances.json").is_file():
        pytest.skip(f"real photos not found at {COCO128}")
    return COCO128


@pytest.fixture
def one_thread():
    """Tiny tensors: more threads only contend for the shared cores (10x slower under load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def perturbed_detector(tiny_clip_dir):
    """A detector on the tiny CLIP whose head is moved off its initialisation, so that a reload or an
    export that silently re-initialised it would differ."""
    import torch

    from ovdet.models.detector import Detector

    torch.manual_seed(0)
    det = Detector.from_clip(str(tiny_clip_dir), image_size=64)
    with torch.no_grad():
        for p in det.head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return det.eval()

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

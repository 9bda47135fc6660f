"""A CLIP or SigLIP folder's own pixel normalisation is used, from either file transformers writes it in.

transformers 5's `Processor.save_pretrained` writes only `processor_config.json` (settings nested under
"image_processor"); older folders have `preprocessor_config.json`. On a square image at the tower's own
size both processors and ovdet's "pad" preprocessing reduce to the normalisation, so pixels must agree.
"""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from test_siglip_tower import save_tiny_siglip

from ovdet.errors import ModelNotAvailableError
from ovdet.models.detector import Detector
from ovdet.text.tokenizer import clip_tokenizer

MEAN, STD = [0.2, 0.5, 0.7], [0.1, 0.3, 0.2]


def processor(kind: str, size: int):
    from transformers import CLIPImageProcessor, CLIPProcessor, SiglipImageProcessor

    if kind == "clip":
        image = CLIPImageProcessor(image_mean=MEAN, image_std=STD, size={"shortest_edge": size},
                                   crop_size={"height": size, "width": size})
        return CLIPProcessor(image_processor=image, tokenizer=clip_tokenizer())
    return SiglipImageProcessor(image_mean=MEAN, image_std=STD, size={"height": size, "width": size})


@pytest.mark.parametrize("file", ["processor_config.json", "preprocessor_config.json"])
@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_the_folders_own_mean_and_std_are_used(kind, file, tiny_clip_dir, tmp_path):
    folder = tmp_path / kind
    if kind == "clip":
        shutil.copytree(tiny_clip_dir, folder)
    else:
        save_tiny_siglip(folder)
        (folder / "preprocessor_config.json").unlink()  # saved with the default 0.5: replaced below
    proc = processor(kind, 32)
    if file == "processor_config.json" and kind == "clip":
        proc.save_pretrained(str(folder))  # transformers 5: processor_config.json only
        assert not (folder / "preprocessor_config.json").exists()
    else:
        getattr(proc, "image_processor", proc).save_pretrained(str(folder))  # preprocessor_config.json
        if file == "processor_config.json":
            (folder / "preprocessor_config.json").rename(folder / "image.json")
            settings = json.loads((folder / "image.json").read_text())
            (folder / "processor_config.json").write_text(json.dumps({"image_processor": settings}))
    det = Detector.from_clip(str(folder), image_size=32)
    assert np.allclose(det.preprocessor.mean.flatten(), MEAN) and np.allclose(det.preprocessor.std.flatten(), STD)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    theirs = getattr(proc, "image_processor", proc)(images=image, return_tensors="pt")["pixel_values"]
    assert (det.preprocessor.to_model([image]) - theirs).abs().max() <= 1e-4


def test_a_broken_processor_config_is_named(tiny_clip_dir, tmp_path):
    folder = shutil.copytree(tiny_clip_dir, tmp_path / "clip")
    (folder / "processor_config.json").write_text('{"image_processor": {"image_mean": [0.5, 0.5], "image_std": [1, 1, 1]}}')
    with pytest.raises(ModelNotAvailableError, match=r"image processor of '.*clip' has image_mean \[0.5, 0.5\]"):
        Detector.from_clip(str(folder), image_size=32)

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ovdet.errors import ImageLoadError, ModelNotAvailableError
from ovdet.models.detector import Detector


@pytest.fixture(scope="module")
def detector(perturbed_detector):
    return perturbed_detector


def test_output_contract(detector):
    x = torch.randn(2, 3, 64, 64)
    q = detector.encode_queries(["a", "b", "c"])
    out = detector(x, q)
    assert out["pred_boxes"].shape == (2, 64, 4) and out["logits"].shape == (2, 64, 3)
    assert out["objectness"].shape == (2, 64) and out["region_embeds"].shape[:2] == (2, 64)
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()


def test_save_and_reload_gives_identical_outputs(detector, tmp_path):
    path = detector.save_pretrained(tmp_path / "model")
    assert {"config.json", "model.safetensors", "clip"} <= {p.name for p in path.iterdir()}
    assert json.loads((path / "config.json").read_text())["model_type"] == "ovdet"
    reloaded = Detector.from_pretrained(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = detector.eval()(x, detector.encode_queries(["red circle", "star"]))
        b = reloaded(x, reloaded.encode_queries(["red circle", "star"]))
    for key in ("pred_boxes", "logits", "objectness", "region_embeds"):
        assert torch.equal(a[key], b[key]), key


def test_detect_accepts_paths_pil_and_arrays(detector, tmp_path):
    array = np.random.default_rng(0).integers(0, 255, (40, 90, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "im.png")
    results = detector.detect([tmp_path / "im.png", Image.fromarray(array), array], ["x", "y"], threshold=0.0)
    assert len(results) == 3
    assert [d.to_dict() for d in results[0]] == [d.to_dict() for d in results[1]] == [d.to_dict() for d in results[2]]
    for det in results[0]:
        x0, y0, x1, y1 = det.box
        assert 0 <= x0 <= x1 <= 90 and 0 <= y0 <= y1 <= 40
        assert det.query == ["x", "y"][det.label]


def test_detect_puts_a_module_left_in_training_mode_back_in_eval(detector):
    """detect skips the eval() walk when nothing trains; a head (or the whole detector) left in train mode still
    gets it, so the answers are inference's."""
    image = np.random.default_rng(1).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    expected = [d.to_dict() for d in detector.eval().detect(image, ["x"], threshold=0.0)[0]]
    for module in (detector.head, detector):
        module.train()
        assert [d.to_dict() for d in detector.detect(image, ["x"], threshold=0.0)[0]] == expected
        assert not any(m.training for m in detector.modules())


def test_logit_template_mode_runs(detector):
    res = detector.detect(np.zeros((32, 32, 3), np.uint8), ["x"], threshold=0.0, templates="clip7", template_mode="logit")
    assert len(res) == 1
    with pytest.raises(ValueError, match="template_mode"):
        detector.detect(np.zeros((32, 32, 3), np.uint8), ["x"], template_mode="both")


def test_bad_inputs(detector, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="0 bytes"):
        detector.detect(empty, ["x"])
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageLoadError, match="cannot be decoded"):
        detector.detect(tmp_path / "junk.jpg", ["x"])
    with pytest.raises(ImageLoadError, match="shape"):
        detector.detect(np.zeros((4, 4, 5), np.uint8), ["x"])
    with pytest.raises(ValueError, match="empty"):
        detector.detect(np.zeros((8, 8, 3), np.uint8), [])


def test_image_size_must_fit_stride(tiny_clip_dir):
    with pytest.raises(ValueError, match="multiple"):
        Detector.from_clip(str(tiny_clip_dir), image_size=60)


def test_missing_hub_model_is_one_clear_error():
    with pytest.raises(ModelNotAvailableError, match="not available offline"):
        Detector.from_pretrained("openai/clip-vit-base-patch32-not-cached")


def test_the_model_names_its_templates_and_a_caller_may_override_them(tiny_clip_dir, tmp_path):
    """A model saved with `templates` uses them whenever a caller names none (ovdet detect / eval)."""
    det = Detector.from_clip(str(tiny_clip_dir), image_size=32, templates="clip7")
    reloaded = Detector.from_pretrained(det.save_pretrained(tmp_path / "model"))
    assert reloaded.templates == "clip7"
    names = ["red circle", "star"]
    assert torch.equal(reloaded.encode_queries(names), reloaded.encode_queries(names, "clip7"))
    assert not torch.allclose(reloaded.encode_queries(names), reloaded.encode_queries(names, "single"))
    x = torch.randn(1, 3, 32, 32)
    own, clip7 = reloaded.predict(x, names), reloaded.predict(x, names, templates="clip7")
    assert torch.equal(own["logits"], clip7["logits"])
    assert Detector.from_clip(str(tiny_clip_dir), image_size=32).templates == "single"


def test_context_tower_runs_on_a_vit_tower_and_reloads(tiny_clip_dir, tmp_path):
    det = Detector.from_clip(str(tiny_clip_dir), image_size=32, context_blocks=1)
    for p in det.head.context.parameters():  # a trained tower: the identity start would hide a reload bug
        torch.nn.init.normal_(p, std=0.05)
    reloaded = Detector.from_pretrained(det.save_pretrained(tmp_path / "model"))
    assert reloaded.settings.context_blocks == 1
    x, q = torch.randn(2, 3, 32, 32), det.encode_queries(["cat"])
    with torch.no_grad():
        a, b = det.eval()(x, q), reloaded(x, q)
    assert torch.equal(a["pred_boxes"], b["pred_boxes"]) and torch.equal(a["objectness"], b["objectness"])

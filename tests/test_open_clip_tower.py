"""The open_clip ResNet CLIP path: save/load offline, dense ResNet features, the detector on top of them."""

import json

import numpy as np
import pytest
import torch

from ovdet.errors import ModelNotAvailableError
from ovdet.towers.loader import load_clip
from ovdet.towers.vision_resnet import CLIPResNetBackbone
from ovdet.models.detector import Detector
from ovdet.towers.open_clip_io import CONFIG_NAME, build_open_clip, save_open_clip


def tiny_resnet_clip(seed: int = 0):
    torch.manual_seed(seed)
    return build_open_clip(
        24,
        {"layers": [1, 1, 1, 1], "width": 8, "image_size": 64, "head_width": 16},
        {"context_length": 16, "width": 32, "heads": 2, "layers": 1},
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.25, 0.25, 0.25),
    )


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    model = tiny_resnet_clip()
    # BatchNorm running statistics are part of the tower: make them non-default so a reload must carry them.
    model.train()
    with torch.no_grad():
        model.encode_image(torch.randn(8, 3, 64, 64))
    return save_open_clip(model.eval(), tmp_path_factory.mktemp("rn_clip") / "clip"), model


def test_saved_clip_reloads_with_identical_embeddings(clip_dir):
    folder, model = clip_dir
    loaded = load_clip(folder)
    assert loaded.format == "open_clip" and loaded.backbone.image_mean == (0.5, 0.5, 0.5)
    x = torch.randn(3, 3, 64, 64)
    texts = ["a photo of a star.", "two small red circles and a striped blue star."]
    with torch.no_grad():
        assert torch.equal(model.encode_image(x), loaded.model.encode_image(x))
        assert torch.equal(model.encode_text(loaded.tokenizer(texts)), loaded.text_tower(texts))
        # The backbone's pooled embedding (any grid size) is CLIP's own image embedding at the training size.
        pooled = loaded.backbone.global_embedding(loaded.backbone.feature_map(x))
    torch.testing.assert_close(pooled, model.encode_image(x), rtol=1e-5, atol=1e-5)


def test_folder_is_open_clip_native(clip_dir):
    import open_clip

    folder, model = clip_dir
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["preprocess_cfg"]["size"] == 64 and config["model_cfg"]["custom_text"] is True
    native = open_clip.create_model(f"local-dir:{folder}").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(native.encode_image(x), model.encode_image(x))


def test_dense_features_and_trainable_stages(clip_dir):
    folder, _ = clip_dir
    loaded = load_clip(folder, trainable_layers=1)
    backbone = loaded.backbone
    assert isinstance(backbone, CLIPResNetBackbone) and backbone.stride == 32 and backbone.width == 24
    feats = backbone(torch.randn(2, 3, 128, 128))
    assert feats.tokens.shape == (2, 16, 24) and feats.grid == (4, 4)
    trainable = {n.split(".")[0] for n, p in backbone.vision.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "attnpool"}
    backbone.train()
    assert not backbone.vision.training and backbone.merge_norm.training  # frozen BatchNorm statistics
    with pytest.raises(ValueError, match="0..4"):
        backbone.set_trainable_layers(5)
    with pytest.raises(ValueError, match="divisible"):
        backbone(torch.randn(1, 3, 80, 80))
    raw = CLIPResNetBackbone(loaded.model.visual, (0.5,) * 3, (0.25,) * 3, dense="raw")
    assert raw(torch.randn(1, 3, 64, 64)).tokens.shape == (1, 4, 8 * 32)


def test_global_merge_uses_the_pooled_embedding(clip_dir):
    folder, model = clip_dir
    loaded = load_clip(folder)
    merged = CLIPResNetBackbone(loaded.model.visual, (0.5,) * 3, (0.25,) * 3, global_merge=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        plain = loaded.backbone(x).tokens
        tokens = merged(x).tokens
    assert tokens.shape == plain.shape and not torch.allclose(tokens, plain)
    with pytest.raises(ValueError, match="dense='proj'"):
        CLIPResNetBackbone(loaded.model.visual, (0.5,) * 3, (0.25,) * 3, dense="raw", global_merge=True)


def test_detector_on_resnet_tower_saves_and_reloads_identically(clip_dir, tmp_path):
    folder, _ = clip_dir
    torch.manual_seed(0)
    det = Detector.from_clip(str(folder), image_size=128, trainable_layers=1)
    with torch.no_grad():
        for p in list(det.head.parameters()) + list(det.backbone.merge_norm.parameters()):
            p.add_(0.05 * torch.randn_like(p))
        det.backbone.vision.layer4[0].conv1.weight.add_(0.05)  # a fine-tuned stage must be saved too
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        q = det.encode_queries(["star", "red circle", "ring"])
        out = det.eval()(x, q)
    assert out["pred_boxes"].shape == (2, 16, 4) and out["logits"].shape == (2, 16, 3)
    assert out["objectness"].shape == (2, 16) and out["region_embeds"].shape == (2, 16, 24)
    path = det.save_pretrained(tmp_path / "det")
    assert {p.name for p in (path / "clip").iterdir()} >= {CONFIG_NAME, "open_clip_model.safetensors"}
    reloaded = Detector.from_pretrained(path)
    assert reloaded.backbone.trainable_layers == 1
    with torch.no_grad():
        again = reloaded(x, reloaded.encode_queries(["star", "red circle", "ring"]))
    for key in ("pred_boxes", "logits", "objectness", "region_embeds"):
        assert torch.equal(out[key], again[key]), key


def test_detect_on_resnet_tower(clip_dir):
    folder, _ = clip_dir
    det = Detector.from_clip(str(folder), image_size=96)
    image = np.random.default_rng(0).integers(0, 255, (50, 120, 3), dtype=np.uint8)
    results = det.detect(image, ["star", "red circle"], threshold=0.0, max_detections=5)
    assert len(results) == 1 and 0 < len(results[0]) <= 5
    for d in results[0]:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 <= x1 <= 120 and 0 <= y0 <= y1 <= 50 and d.query in ("star", "red circle")


def test_bad_configs_and_folders(tmp_path):
    with pytest.raises(ValueError, match="ResNet stage depths"):
        build_open_clip(16, {"layers": 12, "width": 64, "image_size": 64}, {"width": 32, "heads": 1, "layers": 1})
    with pytest.raises(ValueError, match="multiple of 32"):
        build_open_clip(16, {"layers": [1, 1, 1, 1], "width": 8, "image_size": 48}, {"width": 32, "heads": 1, "layers": 1})
    (tmp_path / CONFIG_NAME).write_text("{}")
    with pytest.raises(ModelNotAvailableError, match="open_clip_model.safetensors"):
        load_clip(tmp_path)


def test_crop_rescoring_settings_survive_save_and_load(clip_dir, tmp_path):
    folder, model = clip_dir
    det = Detector.from_clip(str(folder), image_size=128)
    det.set_rescore({"topk": 8, "weight": 0.5, "context": 0.2})
    with torch.no_grad():  # crops are encoded to CLIP's pooled embedding
        crops = torch.randn(2, 3, 64, 64)
        assert torch.equal(det.backbone.encode_crops(crops), model.encode_image(crops))
    path = det.save_pretrained(tmp_path / "det")
    back = Detector.from_pretrained(path)
    assert back.rescore == {"topk": 8, "weight": 0.5, "context": 0.2}
    image = np.random.default_rng(0).integers(0, 255, (100, 128, 3), dtype=np.uint8)
    a = det.detect(image, ["star", "circle"], threshold=0.0, max_detections=5)[0]
    b = back.detect(image, ["star", "circle"], threshold=0.0, max_detections=5)[0]
    assert [d.to_dict() for d in a] == [d.to_dict() for d in b]
    assert len({tuple(d.box) for d in a}) <= 8  # only the top-k regions carry scores


def test_stride16_grid_keeps_the_coarse_tokens_and_adds_layer3(clip_dir, tmp_path):
    folder, _ = clip_dir
    coarse = load_clip(folder).backbone
    fine = load_clip(folder).backbone
    fine.set_feature_stride(16)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        c3, fmap = fine.feature_maps(x)
        feats = fine(x)
        pool = fine.vision.attnpool
        proj = pool.c_proj(pool.v_proj(fmap.flatten(2).transpose(1, 2)))  # [B, 16, E]
    assert feats.grid == (8, 8) and feats.tokens.shape == (2, 64, 24 + c3.shape[1]) and fine.width == 24 + c3.shape[1]
    # Before the LayerNorm, each fine cell carries its parent coarse cell's token and its own layer3 channels.
    raw = torch.cat([torch.nn.functional.interpolate(proj.transpose(1, 2).reshape(2, 24, 4, 4), size=(8, 8)), c3], 1)
    expected = fine.merge_norm(raw.flatten(2).transpose(1, 2))
    torch.testing.assert_close(feats.tokens, expected)
    assert coarse(x).grid == (4, 4)
    with pytest.raises(ValueError, match="feature_stride"):
        fine.set_feature_stride(8)
    det = Detector.from_clip(str(folder), image_size=128, feature_stride=16)
    det.save_pretrained(tmp_path / "det")
    again = Detector.from_pretrained(tmp_path / "det")
    assert again.backbone.feature_stride == 16
    with torch.no_grad():
        torch.testing.assert_close(again(x, det.encode_queries(["star"]))["pred_boxes"], det(x, det.encode_queries(["star"]))["pred_boxes"])

"""SigLIP towers: SiglipModel folders load with SigLIP's own embeddings, save back, and anything that does not fit is refused."""

import io
import json
from pathlib import Path

import pytest
import torch

from ovdet.errors import ModelNotAvailableError
from ovdet.models.detector import Detector
from ovdet.towers.loader import load_clip
from ovdet.towers.text_siglip import SiglipTextTower
from ovdet.towers.vision_siglip import SiglipVisionBackbone

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run best on one thread

TEXTS = ["a photo of a star.", "two small red circles and a striped blue star.", "zebra " * 80]  # the last is cut to fit
SENTENCES = ["a photo of a star.", "two small red circles and a striped blue star.", "a green triangle on the left",
             "the person on the right", "a red umbrella", "forklift in a warehouse", "many shapes of every colour"]


def tiny_tokenizer(folder: Path):
    """A SiglipTokenizer on a sentencepiece model trained here, offline, on a few sentences."""
    import sentencepiece as spm
    from transformers import SiglipTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(SENTENCES * 3), model_writer=model, vocab_size=64,
                                   hard_vocab_limit=False, minloglevel=2)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(model.getvalue())
    return SiglipTokenizer(vocab_file=str(folder / "spiece.model"), model_max_length=64)


def save_tiny_siglip(folder: Path, seed: int = 0) -> Path:
    """A random SiglipModel, every weight moved by 0.05 * randn, saved with its tokenizer and image processor."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    tokenizer = tiny_tokenizer(folder.parent / f"{folder.name}-spm")
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
    )
    torch.manual_seed(seed)
    model = SiglipModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(folder))  # mean/std 0.5
    return folder


@pytest.fixture(scope="module")
def siglip_dir(tmp_path_factory):
    return save_tiny_siglip(tmp_path_factory.mktemp("siglip") / "clip")


@pytest.fixture(scope="module")
def reference(siglip_dir):
    from transformers import AutoTokenizer, SiglipImageProcessor, SiglipModel, SiglipProcessor

    processor = SiglipProcessor(SiglipImageProcessor.from_pretrained(str(siglip_dir)),
                                AutoTokenizer.from_pretrained(str(siglip_dir)))
    return SiglipModel.from_pretrained(str(siglip_dir)).eval(), processor


def test_embeddings_equal_siglip(siglip_dir, reference):
    model, processor = reference
    loaded = load_clip(siglip_dir)
    assert loaded.format == "siglip" and isinstance(loaded.backbone, SiglipVisionBackbone)
    assert isinstance(loaded.text_tower, SiglipTextTower) and loaded.text_tower.embed_dim == 32
    assert loaded.backbone.image_mean == (0.5, 0.5, 0.5) and loaded.backbone.default_image_size == 32
    enc = processor(text=TEXTS, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
    x = torch.randn(3, 3, 32, 32)  # the native size
    with torch.no_grad():
        text_diff = (loaded.text_tower(TEXTS) - model.get_text_features(input_ids=enc["input_ids"]).pooler_output).abs().max()
        tokens, pooled = loaded.backbone.encode(x)
        image_diff = (pooled - model.get_image_features(pixel_values=x).pooler_output).abs().max()
        vm = model.vision_model  # post_layernorm applied exactly once
        once = vm.post_layernorm(vm.encoder(inputs_embeds=vm.embeddings(x)).last_hidden_state)
    assert text_diff <= 1e-5 and image_diff <= 1e-5, (float(text_diff), float(image_diff))
    torch.testing.assert_close(tokens, once, rtol=0, atol=1e-5)
    scale = float(model.logit_scale.detach().exp())
    assert loaded.head_init == pytest.approx({"logit_scale": scale, "logit_shift": float(model.logit_bias.detach()) / scale})


def test_a_mask_would_change_the_embeddings(siglip_dir, reference):
    """Why the tower passes no attention mask: SigLIP was trained without one."""
    model, processor = reference
    enc = processor(text=TEXTS[:1], padding="max_length", max_length=64, return_tensors="pt")
    with torch.no_grad():
        masked = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
        ours = load_clip(siglip_dir).text_tower(TEXTS[:1])
    assert not torch.allclose(masked, ours, atol=1e-3)


def test_merge_modes_and_trainable_layers(siglip_dir):
    backbone = load_clip(siglip_dir, trainable_layers=1).backbone
    x = torch.randn(2, 3, 48, 48)  # not the native 32 px: position embeddings are interpolated
    trainable = {n.split(".")[1] + "." + n.split(".")[2] for n, p in backbone.named_parameters()
                 if p.requires_grad and n.startswith("vision.")}
    assert trainable == {"encoder.layers", "post_layernorm.weight", "post_layernorm.bias", "head.probe",
                         "head.attention", "head.layernorm", "head.mlp"}
    assert not any(p.requires_grad for p in backbone.vision.encoder.layers[0].parameters())
    with torch.no_grad():
        feats = backbone(x)
        tokens, pooled = backbone.encode(x)
        plain = SiglipVisionBackbone(backbone.vision, (0.5,) * 3, (0.5,) * 3, merge="none")(x)
    assert feats.grid == (6, 6) and feats.tokens.shape == (2, 36, 32) and backbone.stride == 8
    torch.testing.assert_close(feats.tokens, backbone.merge_norm(tokens * pooled[:, None]))
    torch.testing.assert_close(plain.tokens, torch.nn.functional.layer_norm(tokens, (32,), eps=1e-6))
    with pytest.raises(ValueError, match="merge must be"):
        SiglipVisionBackbone(backbone.vision, (0.5,) * 3, (0.5,) * 3, merge="cls")
    with pytest.raises(ValueError, match="0..2"):
        backbone.set_trainable_layers(3)
    with pytest.raises(ValueError, match="divisible"):
        backbone(torch.randn(1, 3, 36, 36))


def test_detector_runs_and_survives_save_and_reload(siglip_dir, tmp_path):
    torch.manual_seed(0)
    det = Detector.from_clip(str(siglip_dir), image_size=48, trainable_layers=1)
    with torch.no_grad():
        for p in list(det.head.parameters()) + list(det.backbone.merge_norm.parameters()):
            p.add_(0.05 * torch.randn_like(p))
        det.backbone.vision.encoder.layers[1].mlp.fc1.weight.add_(0.05)  # a fine-tuned block must be saved too
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        out = det.eval()(x, det.encode_queries(["star", "red circle", "ring"]))
    assert out["pred_boxes"].shape == (2, 36, 4) and out["logits"].shape == (2, 36, 3)
    path = det.save_pretrained(tmp_path / "det")
    saved = {p.name for p in (path / "clip").iterdir()}
    assert {"config.json", "model.safetensors", "spiece.model", "preprocessor_config.json"} <= saved
    assert json.loads((path / "clip" / "config.json").read_text())["model_type"] == "siglip"
    again = Detector.from_pretrained(path)
    assert again.clip.format == "siglip" and again.backbone.trainable_layers == 1
    with torch.no_grad():
        back = again(x, again.encode_queries(["star", "red circle", "ring"]))
    for key in ("pred_boxes", "logits", "objectness", "region_embeds"):
        torch.testing.assert_close(back[key], out[key], rtol=0, atol=1e-6, msg=key)


def _rewrite_weights(folder: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(folder / "model.safetensors"))
    change(state)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_missing_and_unexpected_keys_are_refused(siglip_dir, tmp_path):
    import shutil

    folder = Path(shutil.copytree(siglip_dir, tmp_path / "clip"))
    _rewrite_weights(folder, lambda s: s.update({"vision_model.extra.weight": torch.zeros(2)}))
    with pytest.raises(ModelNotAvailableError, match=r"do not fit a SiglipModel: unexpected keys \['vision_model.extra.weight'\]"):
        load_clip(folder)
    _rewrite_weights(folder, lambda s: [s.pop("vision_model.extra.weight"), s.pop("text_model.head.bias")])
    with pytest.raises(ModelNotAvailableError, match=r"missing keys \['text_model.head.bias'\]"):
        load_clip(folder)


def test_another_architecture_under_a_supported_type_is_refused(tiny_clip_dir, tmp_path, siglip_dir):
    """A CLIP's weights beside a SigLIP config.json: transformers would only log it; ovdet refuses."""
    import shutil

    folder = tmp_path / "mixed"
    shutil.copytree(tiny_clip_dir, folder)
    shutil.copy(siglip_dir / "config.json", folder / "config.json")
    shapes = r"wrong shapes \[.*position_embedding.weight \(checkpoint \[17, 32\], model \[16, 32\]\)"
    with pytest.raises(ModelNotAvailableError, match=rf"missing keys \[.*\] and \d+ more; unexpected keys .*; {shapes}") as err:
        load_clip(folder)
    assert "\n" not in str(err.value)


def test_unknown_model_types_and_paths_are_named(tmp_path, monkeypatch):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotAvailableError, match=r"type 'bert', which ovdet cannot load; supported: .*siglip") as err:
        load_clip(folder)
    assert "corrupt" not in str(err.value)
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        load_clip(tmp_path / "nowhere" / "clip")
    with pytest.raises(ModelNotAvailableError, match="not available offline"):
        load_clip("google/siglip-not-cached-anywhere")
    monkeypatch.setenv("OVDET_ALLOW_DOWNLOAD", "1")  # allowed, but HF_HUB_OFFLINE (conftest) keeps the hub away
    with pytest.raises(ModelNotAvailableError, match="not available offline"):
        load_clip("google/siglip-not-cached-anywhere")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelNotAvailableError, match=r"no .safetensors weights \(only \['pytorch_model.bin'\]\)"):
        load_clip(folder)


def test_fast_dev_run_trains_and_exports_a_siglip_detector(siglip_dir, tmp_path):
    from synthetic_coco import write_synthetic_coco
    from test_training import compose_train

    from ovdet.training.run import train

    json_path = write_synthetic_coco(tmp_path / "data", num_images=4, seed=0)
    cfg = compose_train(siglip_dir, tmp_path / "out", (json_path, tmp_path / "data" / "images"), "debug=fast_dev_run",
                        "logger=none")
    assert torch.isfinite(torch.tensor(train(cfg)["train/loss"]))
    detector = Detector.from_pretrained(tmp_path / "out" / "detector")
    assert detector.clip.format == "siglip" and detector.info["untrained"] is False

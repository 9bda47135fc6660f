"""EVA-CLIP (open_clip `EVA02-*`, timm `eva02_*_clip_*`): open_clip's own embeddings at any size, a detector on it."""

import json

import pytest
import torch
from PIL import Image
from tiny_timm_clip import MEAN, eva_cfg, native, save_timm_clip

from ovdet.errors import ModelNotAvailableError
from ovdet.models.detector import Detector
from ovdet.towers.loader import load_clip
from ovdet.towers.open_clip_vit import CONFIG_NAME, WEIGHTS_NAME
from ovdet.towers.vision_eva import EvaVisionBackbone

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run best on one thread

# Cleaning matters: an HTML entity, capitals, mojibake (ftfy repairs it), extra spaces, and a text cut to fit.
TEXTS = ["A photo of a STAR &amp; a ring.", "cafÃ©   with  two  red circles", "x " * 40]


@pytest.fixture(scope="module")
def eva_dir(tmp_path_factory):
    return save_timm_clip(tmp_path_factory.mktemp("eva") / "clip", eva_cfg())


@pytest.mark.parametrize("size", [32, 48])  # the tower's own 4 x 4 grid, and 6 x 6 (rotary embeddings rebuilt)
def test_image_and_text_embeddings_equal_open_clip(eva_dir, size):
    reference, tokenizer = native(eva_dir)
    if size != 32:
        reference.visual.set_input_size(size)  # open_clip's own resize: timm resamples the pos and rope embeddings
    clip = load_clip(eva_dir)
    backbone = clip.backbone
    assert isinstance(backbone, EvaVisionBackbone) and backbone.stride == 8 and backbone.default_image_size == 32
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = reference.encode_image(x)
        # ovdet's dense tokens (class token first) pooled as EVA-CLIP pools: the class token, projected.
        tokens = backbone.patch_tokens(x)  # [2, 1 + h*w, D]
        assert tokens.shape[1] == 1 + (size // 8) ** 2
        torch.testing.assert_close(backbone.pooled(tokens), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(backbone.encode_crops(x), expected, rtol=0, atol=1e-5)
        feats = backbone(x)
        assert feats.grid == (size // 8, size // 8) and feats.tokens.shape == (2, (size // 8) ** 2, 32)
        torch.testing.assert_close(clip.text_tower(TEXTS), reference.encode_text(tokenizer(TEXTS)), rtol=0, atol=1e-5)
    assert torch.equal(clip.tokenizer(TEXTS), tokenizer(TEXTS))  # open_clip's BPE with its text cleaning


def test_a_clip_with_its_text_modules_at_the_top_level_loads(tmp_path):
    # `custom_text: false` (open_clip.CLIP): the weights are renamed to the CustomTextCLIP layout, as open_clip does.
    cfg = {k: v for k, v in eva_cfg().items() if k != "custom_text"}
    folder = save_timm_clip(tmp_path / "clip", cfg)
    reference, tokenizer = native(folder)
    clip = load_clip(folder)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clip.backbone.encode_crops(x), reference.encode_image(x), rtol=0, atol=1e-5)
        torch.testing.assert_close(clip.text_tower(TEXTS), reference.encode_text(tokenizer(TEXTS)), rtol=0, atol=1e-5)


def test_trunk_is_timms_dynamic_size_eva(eva_dir):
    # open_clip builds a fixed-size Eva (a 48 px input fails its patch embedding); ovdet's is timm's dynamic one,
    # whose rotary embedding has no fixed grid: it is rebuilt for each input's grid.
    backbone = load_clip(eva_dir).backbone
    assert backbone.trunk.dynamic_img_size and backbone.trunk.rope.feat_shape is None
    with pytest.raises(ValueError, match="divisible by the patch size 8"):
        backbone(torch.randn(1, 3, 36, 36))


def test_trainable_blocks(eva_dir):
    backbone = load_clip(eva_dir, trainable_layers=1).backbone
    trainable = {n.split(".")[1] for n, p in backbone.vision.named_parameters() if p.requires_grad}
    assert trainable == {"blocks", "norm"}
    assert all(p.requires_grad for p in backbone.trunk.blocks[-1].parameters())
    assert not any(p.requires_grad for p in backbone.trunk.blocks[0].parameters())
    assert not backbone.trunk.head.weight.requires_grad  # the projection into the text side's space stays
    with pytest.raises(ValueError, match="0..2"):
        backbone.set_trainable_layers(3)


def test_detector_survives_save_and_reload(eva_dir, tmp_path):
    torch.manual_seed(0)
    det = Detector.from_pretrained(eva_dir)  # a bare tower: an untrained head
    assert det.untrained and det.clip.format == "open_clip"
    det = Detector.from_clip(str(eva_dir), image_size=48, trainable_layers=1)
    with torch.no_grad():
        for p in list(det.head.parameters()) + list(det.backbone.merge_norm.parameters()):
            p.add_(0.05 * torch.randn_like(p))
        for p in det.backbone.trunk.blocks[-1].parameters():  # a fine-tuned block must be saved with the head
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        out = det.eval()(x, det.encode_queries(["star", "ring"]))
    assert out["pred_boxes"].shape == (2, 36, 4) and out["logits"].shape == (2, 36, 2)
    path = det.save_pretrained(tmp_path / "det")
    assert json.loads((path / "clip" / CONFIG_NAME).read_text())["model_cfg"]["vision_cfg"]["timm_pool"] == "token"
    again = Detector.from_pretrained(path)
    assert again.backbone.image_mean == MEAN and again.backbone.trainable_layers == 1
    with torch.no_grad():
        back = again(x, again.encode_queries(["star", "ring"]))
    for key in ("pred_boxes", "logits", "objectness", "region_embeds"):
        torch.testing.assert_close(back[key], out[key], rtol=0, atol=1e-6, msg=key)
    reference, _ = native(path / "clip")  # the saved tower is still an open_clip folder
    with torch.no_grad():
        torch.testing.assert_close(reference.encode_image(x[:, :, :32, :32]), again.backbone.encode_crops(x[:, :, :32, :32]))


def test_cli_detect_prints_the_untrained_banner(eva_dir, tmp_path, capsys):
    from ovdet.cli.main import main
    from ovdet.models.detection import UNTRAINED_BANNER

    image = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    assert main(["detect", str(image), "-q", "cat", "--model", str(eva_dir), "--threshold", "0"]) == 0
    captured = capsys.readouterr()
    assert UNTRAINED_BANNER in captured.out + captured.err


def test_other_timm_towers_are_refused_naming_the_model(tmp_path):
    folder = save_timm_clip(tmp_path / "clip", eva_cfg())
    config = json.loads((folder / CONFIG_NAME).read_text())
    (folder / WEIGHTS_NAME).write_bytes(b"unreadable")  # refused from the config alone, before the weights are read
    for name in ("eva_giant_patch14_224", "vit_base_mci_224", "eva02_base_patch14_224"):
        config["model_cfg"]["vision_cfg"]["timm_model_name"] = name
        (folder / CONFIG_NAME).write_text(json.dumps(config))
        with pytest.raises(ModelNotAvailableError, match=f"timm_model_name='{name}'.*eva02_\\*_clip_\\*") as err:
            load_clip(folder)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("section, changes, field", [
    ("vision_cfg", {"timm_pool": "avg"}, "vision_cfg.timm_pool"),
    ("vision_cfg", {"timm_proj": "mlp"}, "vision_cfg.timm_proj"),
    ("vision_cfg", {"colour": "red"}, "vision_cfg.colour"),
    ("text_cfg", {"hf_tokenizer_name": "bert-base-uncased"}, "text_cfg.hf_tokenizer_name"),
    ("text_cfg", {"vocab_size": 32000}, "text_cfg.vocab_size"),
    ("model", {"multimodal_cfg": {"width": 32}}, "multimodal_cfg"),
])
def test_settings_without_an_exact_dense_view_are_refused_by_name(eva_dir, tmp_path, section, changes, field):
    import shutil

    folder = tmp_path / "clip"
    shutil.copytree(eva_dir, folder)
    config = json.loads((folder / CONFIG_NAME).read_text())
    (config["model_cfg"] if section == "model" else config["model_cfg"][section]).update(changes)
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ModelNotAvailableError, match=rf"model_cfg\.{field}=") as err:
        load_clip(folder)
    assert "\n" not in str(err.value)


def test_weights_that_do_not_fit_the_config_are_refused(eva_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "clip"
    shutil.copytree(eva_dir, folder)
    state = load_file(str(folder / WEIGHTS_NAME))
    del state["visual.trunk.norm.bias"]
    save_file(state, str(folder / WEIGHTS_NAME))
    with pytest.raises(ModelNotAvailableError, match=r"missing \['visual.trunk.norm.bias'\]"):
        load_clip(folder)
    (folder / WEIGHTS_NAME).write_bytes(b"not a safetensors file")
    with pytest.raises(ModelNotAvailableError, match="cannot be read"):
        load_clip(folder)


def test_fast_dev_run_trains_a_detector_on_it(eva_dir, tmp_path):
    from tower_runs import fast_dev_run

    detector = fast_dev_run(eva_dir, tmp_path)
    assert detector.clip.format == "open_clip" and detector.info["untrained"] is False
    assert isinstance(detector.backbone, EvaVisionBackbone)


def test_cli_export_matches_torch(eva_dir, tmp_path):
    from tower_runs import cli_export

    pytest.importorskip("onnxruntime")
    info = cli_export(eva_dir, tmp_path)
    assert max(info["check"]["max_abs_diff"].values()) < 1e-4


def test_dense_distillation_stage_runs_end_to_end(eva_dir, tmp_path):
    from tower_runs import dense_distill_run

    from ovdet.distill.region_tower import region_tower
    from ovdet.towers.eva_region_tower import EvaRegionTower

    assert isinstance(region_tower(load_clip(eva_dir)), EvaRegionTower)
    dense_distill_run(eva_dir, tmp_path, 48)

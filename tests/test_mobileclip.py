"""MobileCLIP / MobileCLIP2 (open_clip, timm `fastvit_mci*`): open_clip's own embeddings, its map, a detector on it."""

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from tiny_timm_clip import MEAN, mobileclip_cfg, native, save_timm_clip

from ovdet.distill.region_embedding import dense_region_embeddings
from ovdet.distill.region_tower import region_tower
from ovdet.errors import ModelNotAvailableError
from ovdet.models.detector import Detector
from ovdet.distill.mean_pool_region_tower import MeanPoolRegionTower
from ovdet.towers.loader import load_clip
from ovdet.towers.open_clip_vit import CONFIG_NAME
from ovdet.towers.vision_fastvit import FastViTVisionBackbone

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run best on one thread

TEXTS = ["A photo of a STAR &amp; a ring.", "cafÃ©   with  two  red circles!", "x " * 40]
# MCi0-2 (MobileCLIP-S*, MobileCLIP2-S0/S2): four stages, stride 32; MCi3/4 (MobileCLIP2-S3/S4): five, stride 64.
FAMILIES = {"mci": ("fastvit_mci_tiny", 64, 32), "mci5": ("fastvit_mci_tiny5", 128, 64)}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def mobileclip_dir(request, tmp_path_factory):
    name, size, stride = FAMILIES[request.param]
    folder = save_timm_clip(tmp_path_factory.mktemp(request.param) / "clip", mobileclip_cfg(name, size))
    return folder, size, stride


@pytest.fixture(scope="module")
def s_dir(tmp_path_factory):
    return save_timm_clip(tmp_path_factory.mktemp("mci_s") / "clip", mobileclip_cfg())


@pytest.mark.parametrize("scale", [1.0, 1.5])  # native, and a larger map (open_clip takes any size here too)
def test_image_and_text_embeddings_equal_open_clip(mobileclip_dir, scale):
    folder, native_size, stride = mobileclip_dir
    size = int(native_size * scale)
    reference, tokenizer = native(folder)
    clip = load_clip(folder)
    backbone = clip.backbone
    assert isinstance(backbone, FastViTVisionBackbone) and backbone.stride == stride and backbone.width == 16
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = reference.encode_image(x)
        cells = backbone.cell_embeddings(x)  # [2, E, h, w]: ovdet's dense map, each cell in the joint space
        assert cells.shape == (2, 16, size // stride, size // stride)
        torch.testing.assert_close(cells.mean((2, 3)), expected, rtol=0, atol=1e-5)  # MobileCLIP's own average pool
        torch.testing.assert_close(backbone.encode_crops(x), expected, rtol=0, atol=1e-5)
        feats = backbone(x)
        assert feats.grid == (size // stride,) * 2 and feats.tokens.shape == (2, (size // stride) ** 2, 16)
        torch.testing.assert_close(clip.text_tower(TEXTS), reference.encode_text(tokenizer(TEXTS)), rtol=0, atol=1e-5)
    assert torch.equal(clip.tokenizer(TEXTS), tokenizer(TEXTS))


def test_text_cleaning_follows_the_config(tmp_path):
    # open_clip reads `tokenizer_kwargs` from the config (e.g. clean="canonicalize": punctuation dropped).
    folder = save_timm_clip(tmp_path / "clip", mobileclip_cfg(tokenizer_kwargs={"clean": "canonicalize"}))
    reference, tokenizer = native(folder)
    clip = load_clip(folder)
    assert torch.equal(clip.tokenizer(TEXTS), tokenizer(TEXTS))
    plain = load_clip(save_timm_clip(tmp_path / "plain", mobileclip_cfg())).tokenizer
    assert not torch.equal(clip.tokenizer(TEXTS[1:2]), plain(TEXTS[1:2]))  # "!" is a token of its own there
    with torch.no_grad():
        torch.testing.assert_close(clip.text_tower(TEXTS), reference.encode_text(tokenizer(TEXTS)), rtol=0, atol=1e-5)


def test_whole_input_box_is_mobileclips_own_image_embedding(mobileclip_dir):
    folder, size, _ = mobileclip_dir
    clip = load_clip(folder)
    tower = region_tower(clip)
    assert isinstance(tower, MeanPoolRegionTower) and tower.roi_size == 2 and tower.crop_size == size
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        image = F.normalize(clip.model.encode_image(x), dim=-1)
        whole = [torch.tensor([[0.0, 0.0, size, size]])] * 2
        torch.testing.assert_close(dense_region_embeddings(tower, x, whole), image, rtol=1e-5, atol=1e-5)


def test_trainable_stages_and_frozen_batchnorm(s_dir):
    backbone = load_clip(s_dir, trainable_layers=1).backbone
    trainable = {n for n, p in backbone.vision.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("trunk.stages.3.", "trunk.final_conv.")) for n in trainable)
    assert any(n.startswith("trunk.final_conv.") for n in trainable)
    assert not backbone.trunk.head.fc.weight.requires_grad  # the projection into the text side's space stays
    backbone.train()
    assert not backbone.vision.training and backbone.merge_norm.training
    with pytest.raises(ValueError, match="0..4"):
        backbone.set_trainable_layers(5)
    with pytest.raises(ValueError, match="divisible by the stride 32"):
        backbone(torch.randn(1, 3, 80, 80))


def test_detector_survives_save_and_reload(s_dir, tmp_path):
    torch.manual_seed(0)
    det = Detector.from_pretrained(s_dir)  # a bare tower: an untrained head
    assert det.untrained and det.clip.format == "open_clip"
    det = Detector.from_clip(str(s_dir), image_size=96, trainable_layers=1)
    with torch.no_grad():
        for p in list(det.head.parameters()) + list(det.backbone.merge_norm.parameters()):
            p.add_(0.05 * torch.randn_like(p))
        for p in det.backbone.trunk.stages[-1].parameters():  # a fine-tuned stage must be saved with the head
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        out = det.eval()(x, det.encode_queries(["star", "ring"]))
    assert out["pred_boxes"].shape == (2, 9, 4) and out["logits"].shape == (2, 9, 2)
    path = det.save_pretrained(tmp_path / "det")
    assert json.loads((path / "clip" / CONFIG_NAME).read_text())["model_cfg"]["text_cfg"]["no_causal_mask"] is True
    again = Detector.from_pretrained(path)
    assert again.backbone.image_mean == MEAN and again.backbone.trainable_layers == 1
    with torch.no_grad():
        back = again(x, again.encode_queries(["star", "ring"]))
    for key in ("pred_boxes", "logits", "objectness", "region_embeds"):
        torch.testing.assert_close(back[key], out[key], rtol=0, atol=1e-6, msg=key)
    reference, _ = native(path / "clip")  # the saved tower is still an open_clip folder
    with torch.no_grad():
        torch.testing.assert_close(reference.encode_image(x), again.backbone.encode_crops(x))


def test_cli_detect_prints_the_untrained_banner(s_dir, tmp_path, capsys):
    from ovdet.cli.main import main
    from ovdet.models.detection import UNTRAINED_BANNER

    image = tmp_path / "x.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image)
    assert main(["detect", str(image), "-q", "cat", "--model", str(s_dir), "--threshold", "0"]) == 0
    captured = capsys.readouterr()
    assert UNTRAINED_BANNER in captured.out + captured.err


@pytest.mark.parametrize("changes, message", [
    ({"timm_pool": "token"}, r"model_cfg\.vision_cfg\.timm_pool='token' is not fastvit's own pooling"),
    ({"timm_model_name": "vit_base_mci_224"}, r"timm_model_name='vit_base_mci_224'.*fastvit_mci\*"),  # MobileCLIP-B
])
def test_other_towers_and_poolings_are_refused_by_name(s_dir, tmp_path, changes, message):
    folder = tmp_path / "clip"
    shutil.copytree(s_dir, folder)
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["model_cfg"]["vision_cfg"].update(changes)
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ModelNotAvailableError, match=message) as err:
        load_clip(folder)
    assert "\n" not in str(err.value)


def test_fast_dev_run_trains_a_detector_on_it(s_dir, tmp_path):
    from tower_runs import fast_dev_run

    detector = fast_dev_run(s_dir, tmp_path)
    assert detector.clip.format == "open_clip" and detector.info["untrained"] is False
    assert isinstance(detector.backbone, FastViTVisionBackbone)


def test_cli_export_matches_torch(s_dir, tmp_path):
    from tower_runs import cli_export

    pytest.importorskip("onnxruntime")
    info = cli_export(s_dir, tmp_path)
    assert max(info["check"]["max_abs_diff"].values()) < 1e-4


def test_dense_distillation_stage_runs_end_to_end(s_dir, tmp_path):
    from tower_runs import dense_distill_run

    dense_distill_run(s_dir, tmp_path, 64)

"""OpenCLIP ViT folders: converted to a transformers CLIP with open_clip's own embeddings, refused by field when not."""

import json
from pathlib import Path

import pytest
import torch

from ovdet.errors import ModelNotAvailableError
from ovdet.models.detector import Detector
from ovdet.towers.loader import load_clip
from ovdet.towers.open_clip_vit import CONFIG_NAME, WEIGHTS_NAME
from ovdet.towers.vision_vit import CLIPVisionBackbone

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors run best on one thread

TEXTS = ["a photo of a star.", "two small red circles and a striped blue star.", "x " * 40]  # the last is cut to fit
# Two families: OpenAI-style (QuickGELU, plain CLIP) and LAION-style (GELU, CustomTextCLIP, odd MLP ratio, a bias).
CONFIGS = {
    "openai": {"embed_dim": 24, "quick_gelu": True,
               "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "head_width": 16, "layers": 2},
               "text_cfg": {"context_length": 16, "width": 32, "heads": 2, "layers": 2}},
    "laion": {"embed_dim": 16, "custom_text": True, "init_logit_bias": -10.0, "nonscalar_logit_scale": True,
              "vision_cfg": {"image_size": [32, 32], "patch_size": 8, "width": 48, "head_width": 16, "layers": 3,
                             "mlp_ratio": 2.5, "final_ln_after_pool": True, "patch_dropout": 0.0},
              "text_cfg": {"context_length": 12, "width": 32, "heads": 4, "layers": 1, "final_ln_after_pool": True}},
}
MEAN, STD = (0.48, 0.45, 0.40), (0.27, 0.26, 0.28)


class _NoTokenizer:
    """open_clip's save_for_hf saves a tokenizer; these folders use OpenAI's BPE, which needs no files."""

    def save_pretrained(self, folder):
        pass


def save_open_clip_vit(folder: Path, model_cfg: dict, seed: int = 0) -> Path:
    """A random open_clip ViT, every weight moved by 0.05 * randn, saved the way open_clip saves for the hub."""
    import open_clip
    from open_clip.push_to_hf_hub import save_for_hf

    torch.manual_seed(seed)
    cls = open_clip.CustomTextCLIP if model_cfg.get("custom_text") else open_clip.CLIP
    model = cls(**{k: v for k, v in model_cfg.items() if k != "custom_text"})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.visual.image_mean, model.visual.image_std = MEAN, STD
    save_for_hf(model, _NoTokenizer(), model_cfg, folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def vit_dir(request, tmp_path_factory):
    return save_open_clip_vit(tmp_path_factory.mktemp(request.param) / "clip", CONFIGS[request.param]), request.param


def native(folder: Path):
    import open_clip

    return open_clip.create_model(f"local-dir:{folder}").eval(), open_clip.get_tokenizer(f"local-dir:{folder}")


def test_embeddings_equal_open_clip(vit_dir):
    folder, family = vit_dir
    model, tokenizer = native(folder)
    loaded = load_clip(folder)
    assert loaded.format == "hf" and isinstance(loaded.backbone, CLIPVisionBackbone)
    assert loaded.backbone.image_mean == MEAN and loaded.backbone.image_std == STD
    x = torch.randn(3, 3, 32, 32)  # the native size
    with torch.no_grad():
        image_diff = (loaded.model.get_image_features(pixel_values=x).pooler_output - model.encode_image(x)).abs().max()
        text_diff = (loaded.text_tower(TEXTS) - model.encode_text(tokenizer(TEXTS))).abs().max()
    assert image_diff <= 1e-5 and text_diff <= 1e-5, (family, float(image_diff), float(text_diff))
    if family == "laion":  # trained with a sigmoid loss: its scale and bias are offered to the head
        scale = float(model.logit_scale.detach().exp())
        assert loaded.head_init == pytest.approx({"logit_scale": scale, "logit_shift": float(model.logit_bias.detach()) / scale})
    else:
        assert loaded.head_init is None


def test_detector_runs_and_survives_save_and_reload(vit_dir, tmp_path):
    folder, _ = vit_dir
    torch.manual_seed(0)
    det = Detector.from_clip(str(folder), image_size=48, trainable_layers=1)
    with torch.no_grad():
        for p in list(det.head.parameters()) + list(det.backbone.merge_norm.parameters()):
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        out = det.eval()(x, det.encode_queries(["star", "ring"]))
    assert out["pred_boxes"].shape == (2, 36, 4) and out["logits"].shape == (2, 36, 2)
    path = det.save_pretrained(tmp_path / "det")
    assert (path / "clip" / "config.json").is_file()  # saved as a transformers CLIP folder
    again = Detector.from_pretrained(path)
    assert again.backbone.image_mean == MEAN and again.backbone.trainable_layers == 1
    with torch.no_grad():
        back = again(x, again.encode_queries(["star", "ring"]))
    for key in ("pred_boxes", "logits", "objectness", "region_embeds"):
        torch.testing.assert_close(back[key], out[key], rtol=0, atol=1e-6, msg=key)


def edit(folder: Path, section: str, **changes) -> None:
    config = json.loads((folder / CONFIG_NAME).read_text())
    target = config["model_cfg"] if section == "model" else config["model_cfg"][section]
    target.update(changes)
    (folder / CONFIG_NAME).write_text(json.dumps(config))


@pytest.mark.parametrize(
    "section, changes, field",
    [
        ("vision_cfg", {"attentional_pool": True}, "vision_cfg.attentional_pool"),
        ("vision_cfg", {"timm_model_name": "vit_base_patch16_224"}, "vision_cfg.timm_model_name"),
        ("vision_cfg", {"ls_init_value": 1e-5}, "vision_cfg.ls_init_value"),
        ("vision_cfg", {"pool_type": "avg"}, "vision_cfg.pool_type"),
        ("vision_cfg", {"no_ln_pre": True}, "vision_cfg.no_ln_pre"),
        ("vision_cfg", {"pos_embed_type": "sin_cos_2d"}, "vision_cfg.pos_embed_type"),
        ("vision_cfg", {"norm_kwargs": {"eps": 1e-6}}, "vision_cfg.norm_kwargs"),
        ("vision_cfg", {"qk_norm": True}, "vision_cfg.qk_norm"),
        ("vision_cfg", {"image_size": [32, 48]}, "vision_cfg.image_size"),
        ("text_cfg", {"hf_model_name": "roberta-base"}, "text_cfg.hf_model_name"),
        ("text_cfg", {"embed_cls": True}, "text_cfg.embed_cls"),
        ("text_cfg", {"proj_bias": True}, "text_cfg.proj_bias"),
        ("text_cfg", {"pool_type": "last"}, "text_cfg.pool_type"),
        ("text_cfg", {"no_causal_mask": True}, "text_cfg.no_causal_mask"),
        ("text_cfg", {"act_kwargs": {"approximate": "tanh"}}, "text_cfg.act_kwargs"),
        ("text_cfg", {"vocab_size": 32000}, "text_cfg.vocab_size"),
        ("text_cfg", {"colour": "red"}, "text_cfg.colour"),
        ("model", {"multimodal_cfg": {"width": 32}}, "multimodal_cfg"),
    ],
)
def test_configs_without_an_equivalent_are_refused_by_name(tmp_path, section, changes, field):
    folder = save_open_clip_vit(tmp_path / "clip", CONFIGS["openai"])
    edit(folder, section, **changes)
    with pytest.raises(ModelNotAvailableError, match=rf"model_cfg\.{field}=.*no transformers CLIP equivalent") as err:
        load_clip(folder)
    assert "\n" not in str(err.value)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_open_clip_vit(tmp_path / "clip", CONFIGS["openai"])
    state = load_file(str(folder / WEIGHTS_NAME))
    save_file({**state, "visual.extra": torch.zeros(2)}, str(folder / WEIGHTS_NAME))
    with pytest.raises(ModelNotAvailableError, match=r"unexpected \['visual.extra'\]"):
        load_clip(folder)
    del state["visual.ln_post.bias"]
    save_file(state, str(folder / WEIGHTS_NAME))
    with pytest.raises(ModelNotAvailableError, match="missing tensor 'visual.ln_post.bias'"):
        load_clip(folder)
    edit(folder, "vision_cfg", width=64)
    with pytest.raises(ModelNotAvailableError, match=f"does not match {CONFIG_NAME}"):
        load_clip(folder)
    (folder / WEIGHTS_NAME).unlink()
    with pytest.raises(ModelNotAvailableError, match=f"has no {WEIGHTS_NAME}"):
        load_clip(folder)


def test_fast_dev_run_trains_and_exports_an_open_clip_vit_detector(tmp_path):
    from synthetic_coco import write_synthetic_coco
    from test_training import compose_train

    from ovdet.training.run import train

    folder = save_open_clip_vit(tmp_path / "clip", CONFIGS["openai"])
    json_path = write_synthetic_coco(tmp_path / "data", num_images=4, seed=0)
    cfg = compose_train(folder, tmp_path / "out", (json_path, tmp_path / "data" / "images"), "debug=fast_dev_run",
                        "logger=none")
    assert torch.isfinite(torch.tensor(train(cfg)["train/loss"]))
    detector = Detector.from_pretrained(tmp_path / "out" / "detector")
    assert detector.clip.format == "hf" and detector.info["untrained"] is False

"""OWL-ViT and OWLv2 folders load as ovdet detectors that compute exactly what transformers computes.

Tiny random configs, every weight perturbed by 0.05 * randn so a wrong mapping shows, saved with
`save_pretrained` as transformers saves them, loaded through `ovdet detect --model DIR`'s own path.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovdet.cli.main import main
from ovdet.models.detector import Detector
from ovdet.text.tokenizer import clip_tokenizer
from ovdet.towers.owl import load_owl_detector as _load_owl


def load_owl_detector(folder, image_size=None):
    return _load_owl(Detector, folder, image_size=image_size)

QUERIES = ["a cat", "a remote control", "two dogs"]
SIZE, PATCH = 64, 16


def _configs(kind: str):
    from transformers import Owlv2Config, OwlViTConfig

    text = {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 16}
    vision = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": SIZE, "patch_size": PATCH}
    cls = OwlViTConfig if kind == "owlvit" else Owlv2Config
    return cls(text_config=text, vision_config=vision, projection_dim=32)  # OWL: class head width = text hidden size = projection


def save_tiny_owl(folder, kind: str, seed: int = 0, size: int = SIZE, **processor_settings):
    """A tiny random OWL detector with perturbed weights and its processor, as transformers saves them
    (`size` and `processor_settings`, e.g. image_mean, for the image processor)."""
    import transformers

    torch.manual_seed(seed)
    prefix = "OwlViT" if kind == "owlvit" else "Owlv2"
    model = getattr(transformers, f"{prefix}ForObjectDetection")(_configs(kind)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    image_processor = getattr(transformers, f"{prefix}ImageProcessor")(
        size={"height": size, "width": size}, **({"crop_size": {"height": size, "width": size}} if kind == "owlvit" else {}),
        **processor_settings)
    tokenizer = clip_tokenizer()
    tokenizer.model_max_length = 16  # OWL's text tower holds 16 positions; its processor pads to that
    getattr(transformers, f"{prefix}Processor")(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return model


@pytest.fixture(scope="module", params=["owlvit", "owlv2"])
def owl(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    model = save_tiny_owl(folder, request.param)
    return request.param, folder, model


def _processor(folder, kind):
    import transformers

    return getattr(transformers, "OwlViTProcessor" if kind == "owlvit" else "Owlv2Processor").from_pretrained(folder)


def _hf_outputs(model, processor, pixel_values, interpolate=False):
    text = processor(text=[QUERIES], return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=text["input_ids"], attention_mask=text["attention_mask"], pixel_values=pixel_values,
                     interpolate_pos_encoding=interpolate)


@pytest.mark.parametrize("size", [SIZE, 96])  # native, and interpolated position embeddings (6 x 6 grid)
@pytest.mark.parametrize("fast", [False, True])  # set_precision("fp32"): oneDNN-prepacked Linear layers
def test_outputs_equal_transformers(owl, size, fast):
    kind, folder, model = owl
    det = load_owl_detector(folder, image_size=size)
    if fast:
        det.set_precision("fp32")
    pixels = torch.randn(1, 3, size, size)
    ref = _hf_outputs(model, _processor(folder, kind), pixels, interpolate=size != SIZE)
    out = det.predict(pixels, QUERIES, templates="single")
    assert torch.allclose(out["pred_boxes"], ref.pred_boxes, atol=1e-5, rtol=0)
    # 1e-5, relative where |logit| > 1: random weights give logits near 90, where one fp32 step is 7.6e-6
    assert ((out["logits"] - ref.logits).abs() / ref.logits.abs().clamp(min=1)).max() <= 1e-5
    if kind == "owlv2":
        ref_obj = ref.objectness_logits  # in the hundreds here: one fp32 step is 3e-5 at 300
        assert ((out["objectness"] - ref_obj).abs() / ref_obj.abs().clamp(min=1)).max() <= 1e-5


def test_from_pretrained_reads_the_folder_as_a_trained_detector(owl):
    kind, folder, _ = owl
    det = Detector.from_pretrained(folder)
    assert not det.untrained and det.settings.box_bias == "corner"
    assert det.settings.preprocess == {"owlvit": "stretch", "owlv2": "pad_gaussian"}[kind]
    assert (det.head.objectness_mlp is None) == (kind == "owlvit")


def test_preprocessing_equals_the_image_processor_on_real_photos(owl, coco128):
    kind, folder, _ = owl
    det = load_owl_detector(folder)
    processor = _processor(folder, kind)
    photos = sorted((coco128 / "images").iterdir())[:6]
    sizes = set()
    for path in photos:
        image = Image.open(path).convert("RGB")
        sizes.add(image.size)
        theirs = processor(images=image, return_tensors="pt")["pixel_values"]
        ours = det.preprocessor.to_model([image])
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max() <= 1e-4, path.name
    assert any(w != h for w, h in sizes)  # non-square photos were among them


def test_hf_postprocess_mode_returns_post_process_object_detection(owl, coco128):
    kind, folder, model = owl
    det = load_owl_detector(folder)
    processor = _processor(folder, kind)
    image = Image.open(sorted((coco128 / "images").iterdir())[1]).convert("RGB")
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    outputs = _hf_outputs(model, processor, pixels)
    threshold = float(outputs.logits.max(-1).values.sigmoid().median())  # about half the regions pass
    ref = processor.image_processor.post_process_object_detection(outputs, threshold=threshold, target_sizes=[image.size[::-1]])[0]
    ours = det.detect(image, QUERIES, threshold=threshold, postprocess="hf", templates="single", max_detections=10**6)[0]
    order = ref["scores"].argsort(descending=True, stable=True)
    assert len(ours) == len(order) > 0
    assert [d.label for d in ours] == ref["labels"][order].tolist()
    assert np.allclose([d.score for d in ours], ref["scores"][order].numpy(), atol=1e-4)
    assert np.allclose([d.box for d in ours], ref["boxes"][order].numpy(), atol=0.02)  # rounded to 0.01 px


def test_pipeline_records_match_the_transformers_pipeline(owl, coco128):
    from transformers import pipeline

    kind, folder, _ = owl
    image = Image.open(sorted((coco128 / "images").iterdir())[2]).convert("RGB")
    theirs = pipeline("zero-shot-object-detection", model=str(folder), device="cpu")(image, candidate_labels=QUERIES,
                                                                                     threshold=0.1)
    dets = Detector.from_pretrained(folder).detect(image, QUERIES, threshold=0.1, postprocess="pipeline",
                                                  max_detections=10**6)[0]
    ours = [d.to_pipeline() for d in dets]
    assert len(ours) == len(theirs) > 0
    key = lambda r: (r["label"], -r["score"])  # noqa: E731 (ties in score may order either way)
    for a, b in zip(sorted(ours, key=key), sorted(theirs, key=key)):
        assert a["label"] == b["label"] and abs(a["score"] - b["score"]) < 1e-4
        assert all(abs(a["box"][k] - b["box"][k]) <= 1 for k in a["box"])  # ints truncated from near-equal floats


def test_cli_detect_runs_an_owl_folder_and_saves_it_as_an_ovdet_folder(owl, tmp_path, capsys):
    kind, folder, _ = owl
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 70, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "r.json"
    # "hf" post-processing keeps zero-area boxes, which random OWLv2 weights predict everywhere
    assert main(["detect", str(image), "-q", "cat", "--model", str(folder), "--threshold", "0", "--out", str(out),
                 "--quiet", "--postprocess", "hf"]) == 0
    records = json.loads(out.read_text())
    assert records[0]["untrained"] is False and records[0]["detections"]
    det = Detector.from_pretrained(folder)
    saved = det.save_pretrained(tmp_path / "ovdet-model")
    again = Detector.from_pretrained(saved)
    pixels = torch.randn(1, 3, SIZE, SIZE)
    a, b = det.predict(pixels, ["cat"]), again.predict(pixels, ["cat"])
    assert torch.allclose(a["logits"], b["logits"], rtol=1e-5, atol=1e-5)  # kernels may pick another summation order
    assert torch.allclose(a["pred_boxes"], b["pred_boxes"], atol=1e-6)


@pytest.mark.parametrize("kind", ["owlvit", "owlv2"])
def test_an_owl_checkpoint_is_the_start_of_head_fine_tuning(kind, tmp_path):
    """`ovdet train model=owl model.path=DIR`: a few steps from OWL's own heads, saved as an ovdet folder."""
    from hydra import compose, initialize_config_dir
    from synthetic_coco import write_synthetic_coco

    from ovdet.training.run import train

    folder = tmp_path / kind
    save_tiny_owl(folder, kind)
    json_path = write_synthetic_coco(tmp_path / "data", num_images=4, seed=0)
    images = tmp_path / "data" / "images"
    data = [f"data.train_json={json_path}", f"data.train_images={images}", f"data.val_json={json_path}",
            f"data.val_images={images}"]
    config_dir = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smoke", "model=owl", f"model.path={folder}", *data,
                                          f"paths.output_dir={tmp_path / 'out'}", "debug=fast_dev_run", "logger=none"])
    assert torch.isfinite(torch.tensor(train(cfg)["train/loss"]))
    tuned = Detector.from_pretrained(tmp_path / "out" / "detector")
    assert tuned.clip.format == kind and tuned.settings.box_bias == "corner" and not tuned.untrained


def test_folders_ovdet_cannot_load_are_refused_in_one_line(owl, tmp_path):
    """Never a silently random model: an unknown model_type, or weights that leave keys missing, exit 2."""
    import shutil
    import subprocess
    import sys

    from safetensors.torch import load_file, save_file

    kind, folder, _ = owl
    image = tmp_path / "photo.png"
    Image.new("RGB", (32, 32)).save(image)
    typo = tmp_path / "typo"
    shutil.copytree(folder, typo)
    config = json.loads((typo / "config.json").read_text())
    (typo / "config.json").write_text(json.dumps({**config, "model_type": "owlvitt"}))
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    state = load_file(broken / "model.safetensors")
    save_file({k: v for k, v in state.items() if not k.startswith("box_head.")}, broken / "model.safetensors")
    for model, needle in ((typo, "owlvitt"), (broken, "box_head")):
        proc = subprocess.run([sys.executable, "-m", "ovdet.cli.main", "detect", str(image), "-q", "cat", "--model",
                               str(model)], capture_output=True, text=True, env={**__import__("os").environ})
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
        assert "corrupt" not in lines[0]


@pytest.mark.parametrize("kind", ["owlvit", "owlv2"])
def test_the_processor_config_transformers_5_writes_is_read(kind, tmp_path):
    """transformers 5 saves the image processor only inside processor_config.json: its own mean, std and
    size (96, not the tower's 64) must be the ones ovdet uses, as transformers' processor does."""
    folder = tmp_path / kind
    model = save_tiny_owl(folder, kind, size=96, image_mean=[0.2, 0.5, 0.7], image_std=[0.1, 0.3, 0.2])
    assert (folder / "processor_config.json").is_file() and not (folder / "preprocessor_config.json").exists()
    det = Detector.from_pretrained(folder)
    assert det.settings.image_size == 96
    processor = _processor(folder, kind)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 80, 3), dtype=np.uint8))
    theirs = processor(images=image, return_tensors="pt")["pixel_values"]
    ours = det.preprocessor.to_model([image])
    assert ours.shape == theirs.shape and (ours - theirs).abs().max() <= 1e-4
    ref = _hf_outputs(model, processor, theirs, interpolate=True)
    out = det.predict(ours, QUERIES, templates="single")
    assert ((out["logits"] - ref.logits).abs() / ref.logits.abs().clamp(min=1)).max() <= 1e-3  # pixels agree to 1e-4
    assert torch.allclose(out["pred_boxes"], ref.pred_boxes, atol=1e-3, rtol=0)

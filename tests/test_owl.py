"""OWL-ViT and OWLv2 folders load as ovdet detectors that compute exactly what transformers computes.

Tiny random configs, every weight perturbed by 0.05 * randn so a wrong mapping shows, saved with
`save_pretrained` as transformers saves them, loaded through `ovdet detect --model DIR`'s own path.
"""

import json

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


def save_tiny_owl(folder, kind: str, seed: int = 0):
    """A tiny random OWL detector with perturbed weights and its processor, as transformers saves them."""
    import transformers

    torch.manual_seed(seed)
    prefix = "OwlViT" if kind == "owlvit" else "Owlv2"
    model = getattr(transformers, f"{prefix}ForObjectDetection")(_configs(kind)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    image_processor = getattr(transformers, f"{prefix}ImageProcessor")(
        size={"height": SIZE, "width": SIZE}, **({"crop_size": {"height": SIZE, "width": SIZE}} if kind == "owlvit" else {}))
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
def test_outputs_equal_transformers(owl, size):
    kind, folder, model = owl
    det = load_owl_detector(folder, image_size=size)
    pixels = torch.randn(1, 3, size, size)
    ref = _hf_outputs(model, _processor(folder, kind), pixels, interpolate=size != SIZE)
    out = det.predict(pixels, QUERIES, templates="single")
    assert torch.allclose(out["pred_boxes"], ref.pred_boxes, atol=1e-5, rtol=0)
    # 1e-5, relative where |logit| > 1: random weights give logits near 90, where one fp32 step is 7.6e-6
    assert ((out["logits"] - ref.logits).abs() / ref.logits.abs().clamp(min=1)).max() <= 1e-5
    if kind == "owlv2":
        assert (out["objectness"] - ref.objectness_logits).abs().max() <= 1e-5


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
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["pred_boxes"], b["pred_boxes"])

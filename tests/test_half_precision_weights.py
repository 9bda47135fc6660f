"""Weights saved in fp16 or bf16 load as float32, for every family: precision is chosen at run time.

transformers 5 keeps a checkpoint's saved dtype unless told otherwise, so half-precision towers ran in
half precision while `set_precision("fp32")` said fp32 (logits 0.056 (fp16) and 0.69 (bf16) relative
off transformers' fp32 upcast). Each family is saved in fp32, its weights rewritten in half precision
as a half-precision checkpoint holds them, and loaded both ways.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_open_clip_tower import tiny_resnet_clip
from test_owl import QUERIES, SIZE, _hf_outputs, _processor, save_tiny_owl
from test_siglip_tower import save_tiny_siglip

from ovdet.models.detector import Detector
from ovdet.models.model_folder import record_checksums
from ovdet.towers.loader import load_clip
from ovdet.towers.open_clip_io import save_open_clip

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
TEXTS = ["a cat", "a red umbrella"]


def to_half(folder: Path, dtype: torch.dtype) -> None:
    """Rewrite a transformers folder's weights in `dtype`, with the config naming it, as transformers saves them."""
    weights = folder / "model.safetensors"
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in load_file(str(weights)).items()}
    save_file(state, str(weights), metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config["dtype"] = str(dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(config))


def all_fp32(module: torch.nn.Module) -> None:
    odd = {n: t.dtype for n, t in [*module.named_parameters(), *module.named_buffers()]
           if t.is_floating_point() and t.dtype != torch.float32}
    assert not odd, f"not float32: {list(odd.items())[:3]}"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp(min=1)).max())


@pytest.fixture(scope="module")
def sources(tmp_path_factory, tiny_clip_dir):
    root = tmp_path_factory.mktemp("fp32")
    save_tiny_owl(root / "owlvit", "owlvit")
    save_tiny_owl(root / "owlv2", "owlv2")
    save_tiny_siglip(root / "siglip")
    shutil.copytree(tiny_clip_dir, root / "clip")
    return root


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("kind", ["owlvit", "owlv2"])
def test_owl_in_half_precision_equals_transformers_fp32(sources, tmp_path, kind, dtype):
    import transformers

    folder = Path(shutil.copytree(sources / kind, tmp_path / kind))
    to_half(folder, DTYPES[dtype])
    det = Detector.from_pretrained(folder)
    all_fp32(det)
    assert det.set_precision("fp32") == "fp32"
    cls = getattr(transformers, f"{'OwlViT' if kind == 'owlvit' else 'Owlv2'}ForObjectDetection")
    ref_model = cls.from_pretrained(folder, dtype=torch.float32).eval()
    pixels = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    ref = _hf_outputs(ref_model, _processor(folder, kind), pixels)
    out = det.predict(pixels, QUERIES, templates="single")
    assert rel(out["logits"], ref.logits) <= 1e-5
    assert torch.allclose(out["pred_boxes"], ref.pred_boxes, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_clip_and_siglip_in_half_precision_equal_transformers_fp32(sources, tmp_path, kind, dtype):
    from transformers import CLIPModel, SiglipModel

    folder = Path(shutil.copytree(sources / kind, tmp_path / kind))
    to_half(folder, DTYPES[dtype])
    det = Detector.from_clip(str(folder), image_size=32)
    all_fp32(det)
    ref = (CLIPModel if kind == "clip" else SiglipModel).from_pretrained(folder, dtype=torch.float32).eval()
    ref_state = ref.state_dict()
    assert all(torch.equal(v, ref_state[k]) for k, v in det.clip.model.state_dict().items())
    tokenizer = det.clip.tokenizer
    if kind == "clip":
        enc = tokenizer(TEXTS, padding=True, return_tensors="pt")
    else:  # SigLIP: padded to max_length, no attention mask (as it was trained)
        enc = {"input_ids": tokenizer(TEXTS, padding="max_length", max_length=64, return_tensors="pt")["input_ids"]}
    with torch.no_grad():
        theirs = ref.get_text_features(**enc).pooler_output
        ours = det.clip.text_tower(TEXTS)
    assert rel(ours, theirs) <= 1e-5


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_open_clip_resnet_in_half_precision_loads_as_its_fp32_upcast(tmp_path, dtype):
    model = tiny_resnet_clip().eval()
    save_open_clip(model, tmp_path / "clip", dtype=DTYPES[dtype])
    loaded = load_clip(tmp_path / "clip")
    all_fp32(loaded.model)
    with torch.no_grad():  # the reference: the same half-precision values, upcast
        for p in model.parameters():
            p.copy_(p.to(DTYPES[dtype]).float())
        tokens = loaded.tokenizer(TEXTS)
        assert rel(loaded.text_tower(TEXTS), model.encode_text(tokens)) <= 1e-5


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_an_ovdet_folder_saved_in_half_precision_loads_as_fp32(tiny_clip_dir, tmp_path, dtype):
    det = Detector.from_clip(str(tiny_clip_dir), image_size=32)
    saved = det.save_pretrained(tmp_path / "det", dtype=DTYPES[dtype])
    to_half(saved / "clip", DTYPES[dtype])  # transformers folders are saved as loaded: make this one half
    record_checksums(saved)  # the clip weights were rewritten after saving
    again = Detector.from_pretrained(saved)
    all_fp32(again)
    assert again.set_precision("fp32") == "fp32"
    with torch.no_grad():  # the reference: the saved detector with every weight rounded to half and upcast
        for t in [*det.parameters(), *det.buffers()]:
            if t.is_floating_point():
                t.copy_(t.to(DTYPES[dtype]).float())
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out, ref = again.predict(pixels, TEXTS), det.predict(pixels, TEXTS)
    assert rel(out["logits"], ref["logits"]) <= 1e-5
    assert torch.allclose(out["pred_boxes"], ref["pred_boxes"], atol=1e-5)

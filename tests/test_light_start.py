"""The start-up path: torchvision's kernels without its package (`box_ops`), open_clip's ResNet CLIP without
open_clip (`ModifiedResNet`, `CLIPTextTransformer`), its tokenizer file loaded on its own, and `ovdet detect` with
the embedded model importing none of torchvision, open_clip or transformers."""

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision.ops as tvops

import ovdet
from ovdet import box_ops
from ovdet.towers.open_clip_io import build_open_clip, read_open_clip, save_open_clip
from ovdet.towers.open_clip_resnet import ResNetCLIP, light_model

# Run in a fresh interpreter, so box_ops and the tokenizer take their own paths (this test process has imported
# torchvision and open_clip, where they hand over to those packages).
FRESH = textwrap.dedent("""
    import sys, torch
    from ovdet import box_ops
    from ovdet.text.tokenizer import simple_tokenizer
    g = torch.Generator().manual_seed(0)
    def boxes(n, scale=100.0):
        xy = torch.rand(n, 2, generator=g) * scale
        return torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=g) * scale / 3], 1)
    out = {"loaded": box_ops.kernels_loaded()}
    for n in (0, 7, 300, 2500):  # 2500 boxes: torchvision's per-class loop (more than 4000 values) on a CPU
        b, s = boxes(n), torch.rand(n, generator=g)
        s[: n // 3] = 0.5  # ties
        labels = torch.randint(0, 5, (n,), generator=g)
        out[f"in{n}"] = (b, s, labels)
        out[f"nms{n}"] = box_ops.nms(b, s, 0.5)
        out[f"batched{n}"] = box_ops.batched_nms(b, s, labels, 0.5)
        out[f"small{n}"] = box_ops.remove_small_boxes(b, 20.0)
    fmap = torch.randn(2, 8, 12, 12, generator=g)
    rois = torch.cat([torch.tensor([[0.0], [1.0], [1.0]]), boxes(3, 90.0)], 1)
    out["fmap"], out["rois"] = fmap, rois
    out["roi"] = box_ops.roi_align(fmap, rois, (7, 7), spatial_scale=12 / 96, sampling_ratio=-1, aligned=True)
    texts = ["a photo of a star.", "Café  &amp; crème brûlée!!", "two small red circles", "  The dog on the left ",
             "x" * 300, "emoji \\U0001F600 and tabs\\tand, punctuation?!", ""]
    tok = simple_tokenizer()
    tok.context_length = 77
    out["texts"], out["tokens"] = texts, tok(texts)
    import pickle
    out["pickled_tokenizer"] = pickle.dumps(tok)  # as a spawned worker would receive it
    out["modules"] = sorted(m for m in ("torchvision", "open_clip", "transformers") if m in sys.modules)
    torch.save(out, sys.argv[1])
""")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    path = tmp_path_factory.mktemp("fresh") / "out.pt"
    subprocess.run([sys.executable, "-c", FRESH, str(path)], check=True, timeout=120)
    return torch.load(path, weights_only=False)


def test_box_ops_answer_as_torchvision_ops_without_importing_it(fresh):
    assert fresh["loaded"] and fresh["modules"] == []  # the kernels came from the library alone
    for n in (0, 7, 300, 2500):
        b, s, labels = fresh[f"in{n}"]
        assert torch.equal(fresh[f"nms{n}"], tvops.nms(b, s, 0.5))
        assert torch.equal(fresh[f"batched{n}"], tvops.batched_nms(b, s, labels, 0.5))
        assert torch.equal(fresh[f"small{n}"], tvops.remove_small_boxes(b, 20.0))
    expected = tvops.roi_align(fresh["fmap"], fresh["rois"], (7, 7), spatial_scale=12 / 96, sampling_ratio=-1,
                               aligned=True)
    assert torch.equal(fresh["roi"], expected)


def test_open_clip_tokenizer_file_alone_tokenises_as_open_clip(fresh):
    import open_clip

    assert torch.equal(fresh["tokens"], open_clip.tokenize(fresh["texts"]))
    again = pickle.loads(fresh["pickled_tokenizer"])  # its class is importable by name in another process
    assert torch.equal(again(fresh["texts"]), fresh["tokens"])


def test_box_convert_and_iou_match_torchvision():
    g = torch.Generator().manual_seed(1)
    boxes = torch.rand(50, 4, generator=g) * 10
    boxes[:, 2:] += boxes[:, :2]
    for a in box_ops.FORMATS:
        for b in box_ops.FORMATS:
            assert torch.equal(box_ops.box_convert(boxes, a, b), tvops.box_convert(boxes, a, b)), (a, b)
    other = boxes.flip(0)[:7]
    assert torch.equal(box_ops.box_iou(boxes, other), tvops.box_iou(boxes, other))
    with pytest.raises(ValueError, match="'xyzw' is not one of"):
        box_ops.box_convert(boxes, "xyzw", "xyxy")
    with pytest.raises(ValueError, match=r"\[K, 5\]"):
        box_ops.roi_align(torch.zeros(1, 2, 4, 4), boxes[:3], (2, 2))


def perturbed(model):
    """Every parameter and BatchNorm statistic moved off its initial value, so a wrongly mapped weight shows."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.add_(0.05 * torch.randn(t.shape, generator=g))
                if name.endswith("running_var"):
                    t.abs_().add_(0.5)
    return model.eval()


@pytest.mark.parametrize("text_cfg, quick", [
    ({"context_length": 16, "width": 32, "heads": 2, "layers": 2}, False),
    ({"context_length": 12, "width": 24, "heads": 3, "layers": 1, "mlp_ratio": 2.5}, True),
])  # fmt: skip
def test_own_resnet_clip_computes_what_open_clip_computes(tmp_path, text_cfg, quick):
    torch.manual_seed(0)
    reference = build_open_clip(24, {"layers": [2, 1, 2, 1], "width": 8, "image_size": 64, "head_width": 16},
                                text_cfg)
    if quick:  # OpenAI's weights use QuickGELU: rebuild through open_clip with the flag, as its config says
        import open_clip

        reference.open_clip_config["model_cfg"]["quick_gelu"] = True
        config = reference.open_clip_config
        cfg = {k: v for k, v in config["model_cfg"].items() if k != "custom_text"}
        reference = open_clip.CustomTextCLIP(**{**cfg, "vision_cfg": {**cfg["vision_cfg"], "layers": (2, 1, 2, 1)}})
        reference.open_clip_config = config
    folder = save_open_clip(perturbed(reference), tmp_path / "clip")
    own = read_open_clip(folder, light=True)
    assert isinstance(own, ResNetCLIP)
    assert own.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(3, 3, 64, 64)
    tokens = torch.randint(1, 49000, (4, text_cfg["context_length"]))
    tokens[:, -3] = 49407  # the end token: pooled there
    with torch.no_grad():
        assert torch.equal(own.encode_image(x), reference.encode_image(x))
        assert torch.equal(own.visual.stem(x), reference.visual.stem(x))
        assert torch.equal(own.encode_text(tokens), reference.encode_text(tokens))
    # and it saves back as open_clip reads it
    again = read_open_clip(save_open_clip(own, tmp_path / "again"))
    with torch.no_grad():
        assert torch.equal(again.encode_image(x), reference.encode_image(x))


def test_configs_outside_the_own_modules_go_to_open_clip():
    base = {"embed_dim": 16, "custom_text": True, "vision_cfg": {"layers": [1, 1, 1, 1], "width": 8},
            "text_cfg": {"width": 32, "heads": 1, "layers": 1}}
    assert isinstance(light_model({"model_cfg": base}), ResNetCLIP)
    for changed in ({"custom_text": False}, {"text_cfg": {"width": 32, "heads": 1, "layers": 1, "pool_type": "last"}},
                    {"vision_cfg": {"layers": 12, "width": 8}}, {"cast_dtype": "fp16"}):
        assert light_model({"model_cfg": {**base, **changed}}) is None, changed


def test_detect_with_the_embedded_model_imports_no_torchvision_open_clip_transformers_or_dynamo(tmp_path):
    """Each of them costs 0.5-1.8 s of start-up (torch._dynamo also came in through a meta-device normal_)."""
    script = textwrap.dedent("""
        import sys
        from ovdet.cli.main import main
        code = main(["detect", sys.argv[2], "-q", "star", "--out", sys.argv[1], "--quiet"])
        print(sorted(m for m in ("torchvision", "open_clip", "transformers", "torch._dynamo") if m in sys.modules))
        sys.exit(code)
    """)
    out = tmp_path / "r.json"
    scene = Path(ovdet.__file__).parent / "assets" / "scene.png"
    run = subprocess.run([sys.executable, "-c", script, str(out), str(scene)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"
    assert out.is_file()

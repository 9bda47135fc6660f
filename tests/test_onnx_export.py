"""ONNX export: onnxruntime gives torch's outputs, for both variants, at other batch sizes and vocabularies."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from ovdet.cli.main import main  # noqa: E402
from ovdet.export.onnx import ExportableDetector, check_onnx, export_onnx, onnx_session  # noqa: E402
from ovdet.models.detector import Detector  # noqa: E402

EMBEDDED = Path(__file__).resolve().parents[1] / "ovdet" / "assets" / "default_model"
TOL = 1e-4


@pytest.fixture(scope="module")
def detector(perturbed_detector):
    return perturbed_detector


def test_embeds_variant_matches_torch_for_any_batch_and_vocabulary(detector, tmp_path):
    path = export_onnx(detector, tmp_path / "m.onnx", "embeds")
    session = onnx_session(path)
    for batch, queries in ((1, ["a"]), (3, ["red circle", "star", "blue", "umbrella"])):
        pixels, embeds = torch.randn(batch, 3, 64, 64), detector.encode_queries(queries)
        got = session.run(None, {"pixel_values": pixels.numpy(), "query_embeds": embeds.numpy()})
        with torch.inference_mode():
            ref = ExportableDetector(detector)(pixels, embeds)
        for g, r in zip(got, ref):
            assert g.shape == tuple(r.shape)
            assert np.abs(g - r.numpy()).max() < TOL


@pytest.mark.slow  # the CLI test below covers this variant too
def test_image_variant_bakes_the_vocabulary(detector, tmp_path):
    embeds = detector.encode_queries(["cat", "dog", "fork"])
    path = export_onnx(detector, tmp_path / "m.onnx", "image", embeds)
    assert [i.name for i in onnx_session(path).get_inputs()] == ["pixel_values"]
    result = check_onnx(path, detector, torch.randn(2, 3, 64, 64), embeds, baked=True, runs=1)
    assert max(result["max_abs_diff"].values()) < TOL
    assert result["ort_s"] > 0 and result["torch_s"] > 0


def test_export_refuses_what_it_cannot_write(detector, tmp_path):
    with pytest.raises(ValueError, match="bakes a vocabulary"):
        export_onnx(detector, tmp_path / "m.onnx", "image")
    with pytest.raises(ValueError, match="variant must be"):
        export_onnx(detector, tmp_path / "m.onnx", "tflite")


def test_cli_export_writes_the_file_and_its_check(tiny_clip_dir, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", "--format", "onnx", "--model", str(tiny_clip_dir), "--out", str(out), "-q", "cat", "-q", "dog",
                 "--runs", "1"]) == 0  # fmt: skip
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["queries"] == ["cat", "dog"] and info["inputs"] == ["pixel_values"]
    assert max(info["check"]["max_abs_diff"].values()) < TOL
    assert "max abs difference" in capsys.readouterr().out
    assert main(["export", "--model", str(tiny_clip_dir), "--out", str(out)]) == 2  # image variant without queries


@pytest.mark.slow
def test_embedded_model_exports_with_crop_rescoring(tmp_path):
    det = Detector.from_pretrained(EMBEDDED)
    embeds = det.encode_queries(["red circle", "blue square", "green triangle"])
    path = export_onnx(det, tmp_path / "embedded.onnx", "image", embeds)
    for batch in (1, 3):  # one [B*K, 5] roi tensor keeps the batch dynamic with crop re-scoring
        pixels = torch.randn(batch, 3, det.image_size, det.image_size)
        result = check_onnx(path, det, pixels, embeds, baked=True, runs=1)
        assert max(result["max_abs_diff"].values()) < 1e-3  # roi_align + a temperature-100 softmax: fp32 noise x100


@pytest.mark.slow
def test_exported_default_model_scores_as_predict_on_the_bundled_scenes(tmp_path):
    """Crop re-scoring and its reference names are in the file: ONNX == Detector.predict, scores and boxes."""
    from ovdet.assets import SCENE
    from ovdet.export.onnx import reference_embeds
    from ovdet.image_io import load_image

    det = Detector.from_pretrained(EMBEDDED)
    queries = ["star", "red circle", "square"]  # "square" is a reference name: it must not compete twice
    embeds = det.encode_queries(queries)
    reference = reference_embeds(det, queries)
    path = export_onnx(det, tmp_path / "embedded.onnx", "image", embeds, reference=reference)
    scenes = [load_image(SCENE), load_image(SCENE).transpose(0)]  # the scene and its mirror image
    pixels = det.preprocessor.to_model(scenes)
    boxes, logits, _ = onnx_session(path).run(None, {"pixel_values": pixels.numpy()})
    ref = det.predict(pixels, queries)
    score_diff = np.abs(1 / (1 + np.exp(-logits)) - ref["logits"].sigmoid().numpy()).max()
    box_diff = np.abs(boxes - ref["pred_boxes"].numpy()).max()
    print(f"ONNX vs predict on the bundled scenes: max abs diff scores {score_diff:.2e}, boxes {box_diff:.2e}")
    assert score_diff <= 1e-4 and box_diff <= 1e-4


def test_cli_export_never_overwrites_a_json_that_is_not_its_sidecar(tiny_clip_dir, tmp_path, capsys):
    """L1: `--out model.onnx` writes `model.json` beside it; a user's own model.json is refused before exporting."""
    mine = tmp_path / "model.json"
    mine.write_text('{"my": "notes"}')
    out = tmp_path / "model.onnx"
    assert main(["export", "--model", str(tiny_clip_dir), "--out", str(out), "-q", "cat", "--no-check"]) == 2
    assert f"the sidecar of --out '{mine}' exists and was not written by ovdet" in capsys.readouterr().err
    assert mine.read_text() == '{"my": "notes"}' and not out.exists()


def test_cli_export_refuses_a_users_onnx_file_before_loading_the_model(tmp_path, capsys):
    """M13: an existing .onnx without ovdet's mark is the user's: one line, before the model load (the model
    named here does not exist, so reaching the load would give another error), the file untouched."""
    import onnx

    theirs = tmp_path / "theirs.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), str(theirs))
    before = theirs.read_bytes()
    code = main(["export", "--model", str(tmp_path / "no-such-model"), "--out", str(theirs), "-q", "cat", "--no-check"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"--out '{theirs}' exists and was not written by ovdet" in err[0]
    assert "--overwrite" in err[0] and theirs.read_bytes() == before


@pytest.mark.parametrize("bad, message", [(["--runs", "0"], "--runs must be >= 1"),
                                          (["--batch-size", "0"], "--batch-size must be >= 1"),
                                          (["--templates", "nope"], "nope"),
                                          (["--vocab-cache", "missing.safetensors"], "not found")])
def test_cli_export_checks_options_before_loading_the_model(tmp_path, capsys, bad, message):
    code = main(["export", "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "m.onnx"), "-q", "cat",
                 *bad])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and "no-such-model" not in err, err


def test_export_marks_the_file_replaces_its_own_and_overwrite_replaces_a_users(tiny_clip_dir, tmp_path, capsys):
    """The file carries ovdet's mark (so a re-export replaces it); --overwrite replaces a user's file; written
    through a temp file, so no partial or temp file is left."""
    from ovdet import file_mark

    out = tmp_path / "model.onnx"
    out.write_bytes(b"the user's own file")
    args = ["export", "--model", str(tiny_clip_dir), "--out", str(out), "-q", "cat", "--no-check"]
    assert main(args + ["--overwrite"]) == 0
    assert file_mark.is_ours(out) and file_mark.is_ours(out.with_suffix(".json"))
    assert main(args) == 0  # its own file: replaced without --overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.onnx"]


def test_the_exporters_chatter_is_silenced(capfd):
    """onnxscript logs "Skipping constant folding ..." once per optimizer pass (twice per export of the
    embedded model): none of it reaches the terminal."""
    import logging

    from ovdet.export.onnx import _quiet_exporter

    with _quiet_exporter():
        logging.getLogger("onnxscript.optimizer._constant_folding").warning("Skipping constant folding for op Split")
        print("[torch.onnx] Obtain model graph")
    captured = capfd.readouterr()
    assert "Skipping constant folding" not in captured.err + captured.out and "torch.onnx" not in captured.out


@pytest.mark.slow
def test_cli_export_of_the_embedded_model_prints_only_its_own_lines(tmp_path, capfd):
    out = tmp_path / "m.onnx"
    assert main(["export", "--out", str(out), "-q", "star", "--no-check"]) == 0
    captured = capfd.readouterr()
    assert "Skipping constant folding" not in captured.out + captured.err
    assert captured.out.splitlines() == [f"exporting image variant to {out} (this takes a while for a ViT) ...",
                                         f"wrote {out} and {out.with_suffix('.json')}"]

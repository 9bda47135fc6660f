"""Runtimes (`Detector.set_runtime`): onnxruntime and OpenVINO run ovdet's own exported graph and answer as the
torch path does (1e-4 relative), with vocabularies, exemplars and negatives as inputs; graphs and the `auto`
choice are cached; a bad runtime, a missing package or a precision a runtime lacks is one line."""

import importlib.util
import json

import pytest
import torch
from PIL import Image

from ovdet.assets import DEFAULT_MODEL, SCENE
from ovdet.cli.main import main
from ovdet.errors import OvdetError
from ovdet.models.detector import Detector
from tests.test_owl import save_tiny_owl

RUNTIMES = [r for r in ("onnxruntime", "openvino") if importlib.util.find_spec(r)]
QUERIES = ["star", "circle", "red circle", "square"]
OUTPUTS = ("pred_boxes", "logits", "objectness")

pytestmark = pytest.mark.skipif(not RUNTIMES, reason="neither onnxruntime nor openvino is installed")


@pytest.fixture(autouse=True)
def graph_cache(tmp_path_factory, monkeypatch):
    """One cache for the module: each graph is exported once however many tests use it."""
    monkeypatch.setenv("OVDET_CACHE", str(tmp_path_factory.getbasetemp() / "ovdet-cache"))


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-12))


def assert_same_answers(got: dict, ref: dict, tolerance: float = 1e-4) -> None:
    for key in OUTPUTS:
        assert relative_error(got[key], ref[key]) <= tolerance, key
    if "negative_veto" in ref:
        assert torch.equal(got["negative_veto"], ref["negative_veto"])


@pytest.fixture(scope="module")
def embedded():
    detector = Detector.from_pretrained(DEFAULT_MODEL).eval()
    detector.set_precision("fp32")
    image = Image.open(SCENE).convert("RGB")
    return detector, detector.preprocessor.to_model([image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])


@pytest.fixture(scope="module")
def tiny_owl(tmp_path_factory):
    folder = tmp_path_factory.mktemp("owlv2")
    save_tiny_owl(folder, "owlv2")
    detector = Detector.from_pretrained(folder).eval()
    detector.set_precision("fp32")
    pixels = detector.preprocessor.to_model([Image.open(SCENE).convert("RGB")] * 3)
    return detector, pixels


@pytest.mark.slow  # two exports of the embedded ResNet (~90 s)
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_embedded_model_answers_as_torch_does(embedded, runtime):
    detector, pixels = embedded
    detector.set_runtime("torch", "fp32")
    ref = detector.predict(pixels, QUERIES)
    ref_negative = detector.predict(pixels, QUERIES[:2], negatives=["square"])
    try:
        assert detector.set_runtime(runtime, "fp32") == runtime
        assert_same_answers(detector.predict(pixels, QUERIES), ref)
        assert_same_answers(detector.predict(pixels, QUERIES[:2], negatives=["square"]), ref_negative)
        one = detector.predict(pixels[:1], QUERIES[1:2])  # another batch and vocabulary size, same graph
        assert one["logits"].shape == (1, ref["logits"].shape[1], 1)
    finally:
        detector.set_runtime("torch")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_owl_folder_answers_as_torch_does_with_exemplars_and_templates(tiny_owl, runtime):
    detector, pixels = tiny_owl
    exemplar = detector.encode_exemplars([(Image.open(SCENE).convert("RGB"), (10, 10, 60, 60))])
    detector.set_runtime("torch", "fp32")
    ref = detector.predict(pixels, ["a cat", "two dogs"], query_embeds=exemplar)
    ref_logit = detector.predict(pixels, ["a cat"], templates="clip7", template_mode="logit", negatives=["a dog"])
    try:
        detector.set_runtime(runtime, "fp32")
        assert_same_answers(detector.predict(pixels, ["a cat", "two dogs"], query_embeds=exemplar), ref)
        got = detector.predict(pixels, ["a cat"], templates="clip7", template_mode="logit", negatives=["a dog"])
        assert_same_answers(got, ref_logit)
    finally:
        detector.set_runtime("torch")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_int8_runs_in_each_runtime_and_stays_near_fp32(tiny_owl, runtime, tmp_path_factory):
    detector, pixels = tiny_owl
    detector.set_runtime("torch", "fp32")
    ref = detector.predict(pixels, ["a cat", "two dogs"])
    calibration = [Image.open(SCENE).convert("RGB")] * 2
    try:
        detector.set_runtime(runtime, "int8", calibration=calibration)
        assert detector.runtime_precision == "int8"
        got = detector.predict(pixels, ["a cat", "two dogs"])
        assert relative_error(got["pred_boxes"], ref["pred_boxes"]) < 0.2
        assert not torch.equal(got["logits"], ref["logits"])  # it did run quantised
    finally:
        detector.set_runtime("torch")


def test_graphs_are_cached_on_disk_and_keyed_by_the_weights(tiny_owl, monkeypatch):
    from ovdet.runtime import engine as engine_module
    from ovdet.runtime.graph_cache import graph_folder

    detector, pixels = tiny_owl
    runtime = RUNTIMES[0]
    detector.set_runtime(runtime, "fp32")
    detector.predict(pixels, ["a cat"])  # built (or already there)
    exports = []
    monkeypatch.setattr(engine_module, "export_graph", lambda *a, **k: exports.append(a))
    detector.set_runtime(runtime, "fp32")  # a new engine: the graph comes from disk
    detector.predict(pixels, ["a cat"])
    assert exports == []
    before = graph_folder(detector, runtime, "fp32", "embeds")
    with torch.no_grad():
        detector.head.class_proj.weight.add_(1.0)
    try:
        assert graph_folder(detector, runtime, "fp32", "embeds") != before  # retrained weights: another graph
    finally:
        with torch.no_grad():
            detector.head.class_proj.weight.sub_(1.0)
        detector.set_runtime("torch")


def test_auto_measures_once_and_reads_its_choice_back(tiny_owl, monkeypatch, capsys):
    from ovdet.runtime import runtime_choice

    detector, _ = tiny_owl
    calls = []
    real = runtime_choice._measure
    monkeypatch.setattr(runtime_choice, "_measure", lambda *a: calls.append(a[1]) or real(*a))
    try:
        chosen = detector.set_runtime("auto", "fp32")
        assert chosen in ("torch", *RUNTIMES) and sorted(calls) == sorted(["torch", *RUNTIMES])
        assert "runtime auto chose" in capsys.readouterr().err
        calls.clear()
        assert detector.set_runtime("auto", "fp32") == chosen and calls == []  # from the cache
    finally:
        detector.set_runtime("torch")


def test_bad_runtimes_and_precisions_are_one_line(tiny_owl, monkeypatch):
    from ovdet.runtime import runtime_names

    detector, _ = tiny_owl
    with pytest.raises(OvdetError, match="runtime 'tensorrt' is not one ovdet runs on"):
        detector.set_runtime("tensorrt")
    if "onnxruntime" in RUNTIMES:
        with pytest.raises(OvdetError, match="onnxruntime runs fp32 or int8, not bf16"):
            detector.set_runtime("onnxruntime", "bf16")
    monkeypatch.setattr(runtime_names, "installed", lambda name: name == "torch")
    with pytest.raises(OvdetError, match=r"pip install 'ovdet\[openvino\]'"):
        detector.set_runtime("openvino")
    assert detector.runtime == "torch"


def test_cli_detect_with_a_runtime_prints_the_torch_boxes(tmp_path, capsys):
    runtime = RUNTIMES[0]
    outs = {}
    for name in ("torch", runtime):
        out = tmp_path / f"{name}.json"
        assert main(["detect", str(SCENE), "-q", "star", "-q", "circle", "--runtime", name, "--precision", "fp32",
                     "--out", str(out), "--quiet"]) == 0
        outs[name] = json.loads(out.read_text())[0]["detections"]
    assert len(outs[runtime]) == len(outs["torch"]) > 0
    for a, b in zip(outs[runtime], outs["torch"]):
        assert a["query"] == b["query"] and abs(a["score"] - b["score"]) < 1e-4
        assert max(abs(x - y) for x, y in zip(a["box"], b["box"])) < 0.05
    with pytest.raises(SystemExit) as refused:  # argparse names the choices in one line
        main(["detect", str(SCENE), "-q", "star", "--runtime", "nope"])
    assert refused.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err


@pytest.mark.skipif("onnxruntime" not in RUNTIMES, reason="onnxruntime is not installed")
def test_onnxruntime_sessions_sleep_after_a_run(tiny_owl, monkeypatch):
    """onnxruntime's threads spin after a run by default and take the cores from what runs next (ovdet's own post-
    processing; an OpenVINO call took 0.046 s instead of 0.024 s on a 2-core Xeon); every session ovdet opens sleeps."""
    import os
    from pathlib import Path

    import onnxruntime as ort

    from ovdet.export.onnx import onnx_session

    opened = []
    real = ort.InferenceSession
    monkeypatch.setattr(ort, "InferenceSession", lambda path, options, **kw: opened.append(options) or real(path, options, **kw))
    detector, pixels = tiny_owl
    detector.set_runtime("onnxruntime", "fp32")
    try:
        detector.predict(pixels[:1], QUERIES)
    finally:
        detector.set_runtime("torch")
    assert len(opened) == 1, "the onnxruntime runtime opened no session"
    onnx_session(sorted(Path(os.environ["OVDET_CACHE"]).rglob("*.onnx"))[0])  # `ovdet export`'s check
    assert len(opened) == 2
    for options in opened:
        for entry in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
            assert options.get_session_config_entry(entry) == "0"

"""The demo's callbacks, model registry and request limits, without a browser (a tiny random model)."""

import json
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from ovdet.demo import callbacks
from ovdet.demo.model_registry import ModelRegistry
from ovdet.demo.model_worker import ModelWorker, RequestTimeout
from ovdet.models.detector import Detector


@pytest.fixture(scope="module")
def model_dir(tiny_clip_dir, tmp_path_factory):
    torch.manual_seed(0)
    det = Detector.from_clip(str(tiny_clip_dir), image_size=64)
    with torch.no_grad():  # a random head, so that regions and queries score differently
        for p in det.head.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return det.save_pretrained(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def detector(model_dir):
    return Detector.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8))


def run(detector, image, queries="red circle, star", **kwargs):
    kwargs = {"threshold": 0.0, "nms": 1.0, "max_detections": 500, **kwargs}
    return callbacks.run_detection(detector, "tiny", image, queries, **kwargs)


def test_parse_queries_lines_commas_blanks_and_repeats():
    text = "red circle, star\n\n  blue square ,star\n,"
    assert callbacks.parse_queries(text) == ["red circle", "star", "blue square"]
    assert callbacks.parse_queries("") == [] and callbacks.parse_queries(None) == []


def test_parse_box_and_clicks():
    assert callbacks.parse_box(" 1, 2,30.5,40 ") == (1.0, 2.0, 30.5, 40.0)
    assert callbacks.parse_box("") is None
    with pytest.raises(ValueError, match="'1,2,3'"):
        callbacks.parse_box("1,2,3")
    clicks, box = callbacks.box_from_clicks([], (50, 10))
    assert box == "" and clicks == [(50.0, 10.0)]
    clicks, box = callbacks.box_from_clicks(clicks, (20, 40))  # corners in any order
    assert clicks == [] and callbacks.parse_box(box) == (20, 10, 50, 40)


def test_refilter_equals_a_fresh_run_and_needs_no_model(detector, image, monkeypatch):
    state, dets = run(detector, image, threshold=0.0, nms=0.5, max_detections=50)
    assert dets and {d.query for d in dets} <= {"red circle", "star"}
    fresh = run(detector, image, threshold=0.02, nms=0.3, max_detections=5)[1]

    def no_model(*args, **kwargs):
        raise AssertionError("re-filtering ran the model")

    monkeypatch.setattr(Detector, "forward", no_model)
    monkeypatch.setattr(Detector, "predict", no_model)
    assert callbacks.refilter(state, 0.0, 0.5, 50) == dets
    assert callbacks.refilter(state, 0.02, 0.3, 5) == fresh
    higher = callbacks.refilter(state, 0.02, 0.5, 50)
    assert all(d in dets for d in higher) and all(d.score >= 0.02 for d in higher)


def test_text_embeddings_are_cached_across_requests(detector, image):
    run(detector, image, "cat, dog")
    calls = detector.text_encoder.tower_calls
    run(detector, image, "dog\ncat")
    assert detector.text_encoder.tower_calls == calls


def test_exemplar_box_and_crop_become_queries(detector, image):
    crop = image.crop((10, 5, 40, 30))
    state, dets = run(detector, image, "star", exemplar_box="10,5,40,30", exemplar_crop=crop)
    assert state.labels == ["star", "exemplar 1", "exemplar 2"]
    assert {d.query for d in dets} == set(state.labels)
    only_exemplar = run(detector, image, "", exemplar_box="10,5,40,30")[1]
    assert only_exemplar and {d.query for d in only_exemplar} == {"exemplar 1"}
    with pytest.raises(ValueError, match="empty inside the 80x48 image"):
        run(detector, image, "star", exemplar_box="70,5,60,30")


def test_negative_equal_to_the_query_removes_its_detections(detector, image):
    dets = run(detector, image, "star, red circle", negatives_text="star")[1]
    assert dets and {d.query for d in dets} == {"red circle"}


def test_bad_inputs_are_clear_errors(detector, image, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no queries"):
        run(detector, image, " , \n")
    with pytest.raises(ValueError, match="no image"):
        run(detector, None)
    path = tmp_path / "secret.png"
    image.save(path)

    def opened(*args, **kwargs):
        raise AssertionError("a user's string reached the file system")

    monkeypatch.setattr(Image, "open", opened)
    with pytest.raises(ValueError, match="must be image data, got str"):
        run(detector, str(path))
    monkeypatch.setattr(callbacks, "MAX_PIXELS", 1000)
    with pytest.raises(ValueError, match="80x48, over 1000 pixels"):
        run(detector, image)


def test_outputs_drawing_table_and_json(detector, image):
    state, dets = run(detector, image, threshold=0.0, max_detections=5)
    drawn = callbacks.draw(image, dets, state.untrained)
    assert drawn.size == image.size and not np.array_equal(np.asarray(drawn), np.asarray(image))
    rows = callbacks.table_rows(dets)
    assert len(rows) == len(dets) == 5 and len(rows[0]) == len(callbacks.TABLE_HEADERS)
    records = json.loads(json.dumps(callbacks.to_json(state, dets)))
    # the schema of `ovdet detect --out`: a list of one record per image
    assert set(records[0]) == {"path", "width", "height", "model", "untrained", "detections"}
    assert (records[0]["width"], records[0]["height"]) == (80, 48)
    assert records[0]["detections"][0] == {"box": dets[0].box, "score": dets[0].score, "label": dets[0].label,
                                           "query": dets[0].query}
    assert "5 detections" in callbacks.summary(state, dets) and "Note" not in callbacks.summary(state, dets)
    assert "Note: check" in callbacks.summary(replace(state, note="check"), dets)


def test_registry_offers_only_what_the_server_found(model_dir, tmp_path):
    (tmp_path / "not_a_model").mkdir()
    registry = ModelRegistry.discover(None, tmp_path / "no_default", [model_dir.parent])
    assert registry.names == ["tiny"]
    assert isinstance(registry.get("tiny"), Detector) and registry.get("tiny") is registry.get("tiny")
    for bad in (str(model_dir), "../tiny", str(tmp_path / "not_a_model"), None):
        with pytest.raises(ValueError, match="unknown model"):
            registry.get(bad)
    with pytest.raises(ValueError, match="no model to offer"):
        ModelRegistry.discover(None, tmp_path / "no_default", [tmp_path / "not_a_model"])


def test_the_threshold_slider_starts_at_the_default_models_own_threshold(model_dir, tmp_path):
    from ovdet.assets import DEFAULT_MODEL

    registry = ModelRegistry.discover(None, DEFAULT_MODEL, [model_dir.parent])
    if (DEFAULT_MODEL / "config.json").is_file():
        shipped = json.loads((DEFAULT_MODEL / "config.json").read_text())["threshold"]
        assert registry.threshold(registry.default) == shipped  # the embedded model's tuned threshold
    own = json.loads((model_dir / "config.json").read_text())["threshold"]
    assert registry.threshold("tiny") == own
    (tmp_path / "owl").mkdir()
    (tmp_path / "owl" / "config.json").write_text('{"model_type": "owlvit"}')  # no threshold key
    assert ModelRegistry({"owl": str(tmp_path / "owl")}).threshold("owl") == 0.6
    assert ModelRegistry({"hub": "org/name"}).threshold("hub") == 0.6  # not a folder: nothing is read


def test_worker_times_out_and_runs_one_call_at_a_time():
    release = threading.Event()
    with pytest.raises(RequestTimeout, match="longer than 0.2 s"):
        ModelWorker(timeout_s=0.2).call(release.wait, 5)  # blocked: the caller gets an error, not a hang
    release.set()
    worker = ModelWorker(timeout_s=30.0)
    active, peak, lock = [0], [0], threading.Lock()

    def job():
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return "done"

    results = []
    threads = [threading.Thread(target=lambda: results.append(worker.call(job))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["done"] * 4 and peak[0] == 1
    worker.shutdown()
    with pytest.raises(ValueError, match="timeout"):
        ModelWorker(timeout_s=0)


def test_demo_server_turns_errors_and_timeouts_into_page_errors(model_dir, image, tmp_path):
    gr = pytest.importorskip("gradio")
    from ovdet.demo.app import KEPT_DOWNLOADS, DemoServer

    registry = ModelRegistry({"tiny": str(model_dir)})
    server = DemoServer(registry, ModelWorker(timeout_s=30), tmp_path / "downloads")
    state, drawn, rows, line, path = server.run(image, "star", "", "", None, "tiny", 0.0, 0.5, 10)
    assert rows and drawn.size == image.size and json.loads(open(path).read())[0]["model"] == "tiny"
    with pytest.raises(gr.Error, match="unknown model"):
        server.run(image, "star", "", "", None, "/etc", 0.0, 0.5, 10)
    with pytest.raises(gr.Error, match="no queries"):
        server.run(image, "", "", "", None, "tiny", 0.0, 0.5, 10)
    slow = DemoServer(registry, ModelWorker(timeout_s=1e-6), tmp_path / "downloads")
    with pytest.raises(gr.Error, match="took longer than"):
        slow.run(image, "star", "", "", None, "tiny", 0.0, 0.5, 10)
    for _ in range(KEPT_DOWNLOADS + 3):
        server.refilter(state, image, 0.0, 0.5, 10)
    assert len(list((tmp_path / "downloads").glob("*.json"))) == KEPT_DOWNLOADS  # bounded on disk


def test_demo_without_gradio_says_how_to_install(monkeypatch, capsys):
    from ovdet.cli.main import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now fails as if not installed
    monkeypatch.delitem(sys.modules, "ovdet.demo.app", raising=False)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "ovdet demo needs gradio: install with pip install 'ovdet[demo]'"


def test_demo_command_binds_loopback_by_default():
    from ovdet.cli.main import build_parser

    args = build_parser().parse_args(["demo"])
    assert (args.host, args.port, args.model) == ("127.0.0.1", 7860, None)


def test_demo_result_equals_ovdet_detect(tmp_path):
    """The demo and the CLI run one pipeline: same image, queries and knobs give the same detections."""
    from ovdet.assets import DEFAULT_MODEL, SCENE
    from ovdet.cli.main import main
    from ovdet.demo.callbacks import run_detection
    from ovdet.image_io import load_image
    from ovdet.models.detector import Detector

    if not (DEFAULT_MODEL / "config.json").is_file():
        pytest.skip("no embedded model shipped")
    out = tmp_path / "r.json"
    assert main(["detect", str(SCENE), "-q", "star", "-q", "red circle", "--negative", "square",
                 "--threshold", "0.3", "--out", str(out), "--quiet"]) == 0
    cli = json.loads(out.read_text())[0]["detections"]
    _, dets = run_detection(Detector.from_pretrained(DEFAULT_MODEL), "embedded", load_image(SCENE), "star, red circle",
                            "square", threshold=0.3)
    assert cli and [d.to_dict() for d in dets] == cli

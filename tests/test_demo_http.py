"""The demo over HTTP on a free loopback port, in this process with a tiny model (K14, L4): slow
clients are cut off, upload storage is capped, a timed-out request frees the model, uploads are
checked before decoding and errors name no server path, and the work folder goes on exit."""

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from ovdet.demo.model_registry import ModelRegistry
from ovdet.models.detector import Detector

gr = pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")
from ovdet.demo import app as demo_app  # noqa: E402
from ovdet.demo.http_server import bind_port  # noqa: E402
from test_demo_limits import BOMB_SIDE, png_with_size  # noqa: E402

MB = 1024**2


@pytest.fixture(scope="module")
def registry(tiny_clip_dir, tmp_path_factory):
    torch.manual_seed(0)
    det = Detector.from_clip(str(tiny_clip_dir), image_size=64)
    return ModelRegistry({"tiny": str(det.save_pretrained(tmp_path_factory.mktemp("models") / "tiny"))})


@pytest.fixture(scope="module")
def demo(registry):
    running = demo_app.launch(registry, bind_port("127.0.0.1", 0), timeout_s=60, max_file_size=MB,
                              max_upload_storage=3 * MB, header_timeout_s=1.0, body_idle_s=1.0, block=False)
    yield running
    running.close()


def png_bytes(size=(80, 48), seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def upload(demo, name: str, content: bytes) -> dict:
    reply = httpx.post(f"{demo.url}/gradio_api/upload", files={"files": (name, content)}, timeout=60)
    assert reply.status_code == 200, reply.text
    return {"path": reply.json()[0], "meta": {"_type": "gradio.FileData"}}


def detect(demo, image: dict, queries: str = "star"):
    """One Detect request through Gradio's HTTP API: ('complete' | 'error', data)."""
    payload = {"data": [image, queries, "", "", None, "tiny", 0.0, 0.5, 10]}
    event = httpx.post(f"{demo.url}/gradio_api/call/detect", json=payload, timeout=30).json()["event_id"]
    text = httpx.get(f"{demo.url}/gradio_api/call/detect/{event}", timeout=120).text
    kind = text.split("event: ")[-1].split("\n")[0].strip()
    return kind, json.loads(text.split("data: ")[-1].strip())


def test_slow_clients_are_disconnected(demo):
    host, port = demo.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        start = time.monotonic()
        assert slow.recv(1024) == b""  # closed by the server
        assert time.monotonic() - start < 5
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                     b"boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n")  # then the body stops
        reply = b"".join(iter(lambda: slow.recv(4096), b""))  # until the server closes the connection
        assert reply.startswith(b"HTTP/1.1 408") and reply.endswith(b"the request body paused over 1 s")
    # A body declared over the limit is refused on its headers, before any of it is read. (Sending the 4 MB
    # as well raced the refusal: the server closes a connection whose body it never read, the client's
    # kernel answers the unread bytes with a reset, and the 413 was lost once in a fresh clone's run.)
    with socket.create_connection((host, int(port)), timeout=10) as huge:
        huge.sendall(b"POST /gradio_api/queue/join HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (4 * MB))
        reply = b"".join(iter(lambda: huge.recv(4096), b""))
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]


def test_upload_storage_stays_under_its_cap(demo):
    cap = demo.uploads.max_bytes
    for i in range(12):  # 12 uploads of 0.9 MB: 10.8 MB sent, 3 MB kept
        upload(demo, f"noise{i}.bin", np.random.default_rng(i).bytes(900 * 1024))
        assert demo.uploads.total_bytes() <= cap
    kind, data = detect(demo, upload(demo, "scene.png", png_bytes()))  # the newest upload is still there
    assert kind == "complete" and data[2]["data"], data


def test_a_request_past_its_timeout_frees_the_model_for_the_next(demo, monkeypatch):
    worker = demo.blocks.ovdet_server.worker
    real = demo_app.callbacks.run_detection
    calls = []

    def first_runs_away(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            for _ in range(3000):  # 30 s in small steps, like a model going batch by batch
                time.sleep(0.01)
        return real(*args, **kwargs)

    monkeypatch.setattr(demo_app.callbacks, "run_detection", first_runs_away)
    monkeypatch.setattr(worker, "timeout_s", 1.0)
    image = upload(demo, "scene.png", png_bytes())
    start = time.monotonic()
    kind, data = detect(demo, image)
    assert kind == "error" and "longer than 1 s" in data["error"]
    monkeypatch.setattr(worker, "timeout_s", 60.0)
    kind, data = detect(demo, image)  # served now, not after the 30 s call
    assert kind == "complete" and time.monotonic() - start < 20, data


def test_an_upload_is_size_checked_before_decoding(demo, tmp_path, monkeypatch):
    decoded = []
    real_load = ImageFile.ImageFile.load

    def load(self):
        decoded.append(self.size)
        if self.size[0] * self.size[1] > 50_000_000:
            raise AssertionError(f"a {self.size} image was decoded")
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    bomb = png_with_size(tmp_path / "bomb.png", BOMB_SIDE).read_bytes()
    kind, data = detect(demo, upload(demo, "bomb.png", bomb))
    assert kind == "error" and data["error"].startswith(f"the image is {BOMB_SIDE}x{BOMB_SIDE}, over 40000000 pixels")
    assert (BOMB_SIDE, BOMB_SIDE) not in decoded


def test_a_corrupt_upload_is_one_line_without_server_paths(demo):
    kind, data = detect(demo, upload(demo, "broken.png", b"\x89PNG\r\n\x1a\n not really"))
    assert kind == "error" and data["error"].startswith("the image is not an image file that can be read")
    assert str(demo.uploads.root.parent) not in data["error"] and "/tmp" not in data["error"]
    assert "\n" not in data["error"]


def test_the_work_folder_is_removed_on_exit(registry):
    running = demo_app.launch(registry, bind_port("127.0.0.1", 0), block=False)
    workdir = running.uploads.root.parent
    upload(running, "scene.png", png_bytes())
    assert any(workdir.rglob("scene.png"))
    running.close()
    assert not workdir.exists()
    with pytest.raises(httpx.HTTPError):
        httpx.get(running.url, timeout=5)


@pytest.mark.slow
def test_ovdet_demo_removes_its_work_folder_on_sigterm(registry, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "TMPDIR": str(tmp_path), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GRADIO_TEMP_DIR", None)
    command = [sys.executable, "-m", "ovdet.cli.main", "demo", "--model", registry.models["tiny"], "--port", str(port)]
    proc = subprocess.Popen(command, cwd=Path(__file__).parents[1], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        workdirs = list(tmp_path.glob("ovdet-demo-*"))
        reply = httpx.post(f"{url}/gradio_api/upload", files={"files": ("a.png", png_bytes())}, timeout=30)
        assert len(workdirs) == 1 and reply.json()[0].startswith(str(workdirs[0]))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    finally:
        proc.kill()
    output = proc.stdout.read()
    assert not workdirs[0].exists(), output
    assert "Traceback" not in output and output.rstrip().endswith("ovdet: interrupted"), output

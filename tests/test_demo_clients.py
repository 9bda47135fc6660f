"""What one client can do to the demo server (issue M, section E), over HTTP on loopback in this process:
only the upload folder is served and no URL is fetched; connections and uploads are bounded per client
address and a body has a total deadline; client mistakes and SIGTERM leave no traceback; sessions and
Gradio's file names are bounded; the API names every input and output."""

import signal
import socket
import threading
import time

import pytest

gr = pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")
from ovdet.demo import app as demo_app  # noqa: E402
from ovdet.demo.http_server import bind_port  # noqa: E402
from test_demo_http import png_bytes, registry  # noqa: E402, F401 - registry is a fixture

MB = 1024**2
PER_CLIENT = 8
OTHER_CLIENT = "127.0.0.2"  # loopback is all of 127/8: a second client address on this machine


@pytest.fixture(scope="module")
def demo(registry):
    running = demo_app.launch(registry, bind_port("127.0.0.1", 0), max_file_size=MB, max_upload_storage=3 * MB,
                              queue_size=8, header_timeout_s=30.0, body_idle_s=2.0, body_deadline_s=4.0,
                              max_per_client=PER_CLIENT, max_sessions=3, block=False)
    yield running
    running.close()


def client(address: str = "127.0.0.1") -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def upload(demo, name: str, content: bytes, address: str = "127.0.0.1") -> httpx.Response:
    with client(address) as http:
        return http.post(f"{demo.url}/gradio_api/upload", files={"files": (name, content)})


def detect(demo, data: list) -> tuple[str, object]:
    """One Detect request through Gradio's HTTP API: ('complete' | 'error', data)."""
    import json

    event = httpx.post(f"{demo.url}/gradio_api/call/detect", json={"data": data}, timeout=30).json()["event_id"]
    text = httpx.get(f"{demo.url}/gradio_api/call/detect/{event}", timeout=120).text
    kind = text.split("event: ")[-1].split("\n")[0].strip()
    return kind, json.loads(text.split("data: ")[-1].strip())


def file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


def test_only_the_upload_folder_is_served(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the server's working folder, where Gradio keeps its example cache
    secret = tmp_path / ".gradio" / "cached_examples" / "secret.txt"
    secret.parent.mkdir(parents=True)
    secret.write_text("secret")
    for name in [".gradio/cached_examples/secret.txt", str(secret), "http://203.0.113.5/x.png"]:
        for route in ("file=", "file/"):
            reply = httpx.get(f"{demo.url}/gradio_api/{route}{name}", timeout=30)
            assert reply.status_code == 403 and "secret" not in reply.text, (route, name, reply.text)
    assert httpx.get(f"{demo.url}/gradio_api/proxy=http://203.0.113.5/x", timeout=30).status_code == 403
    uploaded = upload(demo, "scene.png", png_bytes()).json()[0]
    assert httpx.get(f"{demo.url}/gradio_api/file={uploaded}", timeout=30).status_code == 200


def test_an_image_url_is_refused_and_never_fetched(demo, monkeypatch):
    import gradio.processing_utils

    fetched = []

    async def fetch(url, cache_dir):
        fetched.append(url)
        raise AssertionError("fetched")

    monkeypatch.setattr(gradio.processing_utils, "async_ssrf_protected_download", fetch)
    kind, data = detect(demo, [file_data("http://203.0.113.5/60mb.png"), "star", "", "", None, "tiny", 0.5, 0.5, 10])
    assert kind == "error" and data["error"] == "the image must be uploaded; this demo fetches no URLs"
    assert fetched == []


def test_one_client_cannot_take_every_connection(demo):
    host, port = demo.url.removeprefix("http://").split(":")
    slow = []
    try:
        for _ in range(80):  # more than the server's 4 x 8 + 32 connections, headers never finished
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            slow.append(sock)
        time.sleep(0.3)
        with client(OTHER_CLIENT) as http:
            assert [http.get(demo.url).status_code for _ in range(5)] == [200] * 5  # another client is served
        refused = slow[-1].recv(4096)
        assert refused.startswith(b"HTTP/1.1 503") and b"too many connections from this address" in refused
    finally:
        for sock in slow:
            sock.close()


def _trickle(demo, replies: list) -> None:
    """An upload whose body comes a byte at a time (within the pause limit) until the server answers."""
    host, port = demo.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                     b"boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n")
        sock.settimeout(0.2)
        for _ in range(100):
            try:
                sock.sendall(b"x")
                reply = sock.recv(4096)
                replies.append(reply + _rest(sock))  # the answer may come in more than one piece
                return
            except socket.timeout:
                continue
            except OSError:
                break
        replies.append(b"")


def _rest(sock, limit_s: float = 5.0) -> bytes:
    """What the server still sends before it closes the connection (at most `limit_s`)."""
    chunks, end = [], time.monotonic() + limit_s
    while time.monotonic() < end:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_uploads_are_bounded_per_client_and_in_total_time(demo):
    replies = []
    threads = [threading.Thread(target=_trickle, args=(demo, replies)) for _ in range(2)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(0.6)
    third = upload(demo, "a.png", png_bytes())  # the same client: refused while its 2 uploads run
    assert third.status_code == 503 and "2 uploads from 127.0.0.1 are already running" in third.text
    assert upload(demo, "b.png", png_bytes(), OTHER_CLIENT).status_code == 200  # another client is served
    for thread in threads:
        thread.join(15)
    assert len(replies) == 2 and all(r.startswith(b"HTTP/1.1 408") for r in replies), replies
    assert all(r.endswith(b"the request body took over 4 s") for r in replies), replies
    assert time.monotonic() - start < 12  # cut at the deadline, though no pause was over 2 s


def test_client_mistakes_leave_no_traceback_in_the_log(demo, capfd, caplog):
    for fn_index in (99, -1, "x"):
        reply = httpx.post(f"{demo.url}/gradio_api/queue/join", timeout=30,
                           json={"data": [], "fn_index": fn_index, "session_hash": "abc"})
        assert reply.status_code == 422 and "is not an event of this page" in reply.text
    image = file_data(upload(demo, "scene.png", png_bytes()).json()[0])
    mistakes = {
        "a server path": [file_data("/etc/passwd"), "star", "", "", None, "tiny", 0.5, 0.5, 10],
        "a 10k model name": [image, "star", "", "", None, "x" * 10_000, 0.5, 0.5, 10],
        "a text slider": [image, "star", "", "", None, "tiny", "abc", 0.5, 10],
    }
    errors = {}
    for what, data in mistakes.items():
        kind, reply = detect(demo, data)
        assert kind == "error" and 0 < len(reply["error"]) <= 300 and "\n" not in reply["error"], (what, reply)
        errors[what] = reply["error"]
    assert errors["a server path"].startswith("the image must be uploaded to this page first")
    host, port = demo.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as aborted:  # an upload cut off midway
        aborted.sendall(b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                        b"boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; "
                        b'name="files"; filename="a.png"\r\n\r\n' + b"x" * 5000)
        time.sleep(0.3)
    time.sleep(1.0)
    log = capfd.readouterr().err + caplog.text
    assert "Traceback" not in log and not any(r.exc_info for r in caplog.records), log[-3000:]


def test_sessions_and_gradios_file_names_stay_bounded(demo):
    app = demo.blocks
    for i in range(5):  # each API call is a new session
        image = file_data(upload(demo, f"s{i}.png", png_bytes(seed=i)).json()[0])
        assert detect(demo, [image, "star", "", "", None, "tiny", 0.0, 0.5, 5])[0] == "complete"
    assert len(app.state_holder.session_data) <= 3
    for i in range(6):  # 5.4 MB of uploads through 3 MB of storage: the oldest are deleted
        assert upload(demo, f"noise{i}.bin", bytes([i]) * (900 * 1024)).status_code == 200
    names = set().union(*app.temp_file_sets)
    kept = {str(p) for p in demo.uploads.root.rglob("*") if p.is_file()}
    assert names and names <= kept, sorted(names - kept)[:3]


def test_the_api_names_every_input_and_output(registry, tmp_path):
    info = demo_app.build_app(registry, workdir=tmp_path).get_api_info()["named_endpoints"]["/detect"]
    labels = [r["label"] for r in info["returns"]]
    assert labels == ["Detections", "Detections table", "Summary",
                      "Detections as JSON (same schema as `ovdet detect --out`)"]
    optional = {p["parameter_name"]: p["parameter_default"] for p in info["parameters"] if p["parameter_has_default"]}
    # The threshold's default is the default model's own (its config.json: 0.1 for this tiny model).
    assert optional == {"negatives": None, "box": None, "crop": None, "model": "tiny",
                        "threshold": registry.threshold("tiny"), "nms": 0.5, "max_detections": 100}
    assert registry.threshold("tiny") == 0.1
    required = [p["parameter_name"] for p in info["parameters"] if not p["parameter_has_default"]]
    assert required == ["image", "queries"]


def test_sigterm_on_an_idle_server_prints_no_traceback(registry, capfd, monkeypatch):
    import logging

    thread_errors, records = [], []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        running = demo_app.launch(registry, bind_port("127.0.0.1", 0), block=False)
        threading.Timer(0.5, lambda: signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)).start()
        with pytest.raises(KeyboardInterrupt):
            running.wait()  # as `ovdet demo` does; the CLI turns KeyboardInterrupt into `ovdet: interrupted`
        time.sleep(1.0)  # a server thread still running after wait() would fail here, its socket closed
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
    err = capfd.readouterr().err
    assert "Traceback" not in err and thread_errors == [] and records == [], (err[-3000:], records)
    assert not running.uploads.root.parent.exists()

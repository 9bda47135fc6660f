"""The demo end to end: `ovdet demo` on a free loopback port, driven by headless Chromium and by plain HTTP.

Chromium is Debian's package at /usr/bin/chromium, driven through Playwright's Python client; no
browser is ever downloaded (`playwright install` is never run). Without gradio, playwright or
Chromium the tests that need them skip and say why.
"""

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovdet.cli.detect import DEFAULT_MODEL
from ovdet.demo.examples import BUNDLED_QUERIES, BUNDLED_SCENE
from ovdet.demo.model_registry import DEFAULT_NAME

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DEFAULT_MODEL / "config.json").is_file(), reason="no embedded model shipped"),
]
CHROMIUM = Path("/usr/bin/chromium")
# The network is closed: without these Chromium waits on connections it will never get.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
UPLOAD_CAP = "1mb"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`ovdet demo` as a user starts it, on a free port; yields its URL."""
    pytest.importorskip("gradio", reason="gradio is not installed: pip install 'ovdet[demo]'")
    httpx = pytest.importorskip("httpx")
    log_path = tmp_path_factory.mktemp("demo") / "server.log"
    port = free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ovdet.cli.main", "demo", "--port", str(port), "--max-file-size", UPLOAD_CAP],
            stdout=log, stderr=subprocess.STDOUT, env=ENV,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # up to ~5 minutes on a busy machine: import gradio and torch, load the model
            if proc.poll() is not None:
                pytest.fail(f"ovdet demo exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"ovdet demo never answered on {url}:\n{log_path.read_text()}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_browser_runs_an_example_scene(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")
    if not CHROMIUM.is_file():
        reason = f"Chromium not found at {CHROMIUM}: apt-get install -y chromium"
        if os.environ.get("OVDET_REQUIRE_BROWSER"):  # CI installs it: missing there is a failure
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_api.sync_playwright() as pw:
        # A fresh profile folder (Playwright passes it as --user-data-dir).
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.goto(server, timeout=120_000)
            page.get_by_text(BUNDLED_QUERIES).first.click()  # the bundled example scene
            page.wait_for_selector("#input-image img", timeout=60_000)
            queries = page.locator("#queries textarea")
            queries.fill("")
            queries.type("star")
            page.locator("#detect").click()
            page.wait_for_function("() => document.querySelector('#timing').innerText.includes('detections')",
                                   timeout=180_000)
            # One query cell per result row (the grid is virtual: rows are divs, not <tr>s).
            query_cells = page.locator("#results [role=gridcell]").filter(has_text=re.compile(r"^\s*star\s*$"))
            query_cells.first.wait_for(timeout=30_000)
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            assert query_cells.count() >= 1
            shown_src = page.locator("#input-image img").first.get_attribute("src")
            drawn_src = page.locator("#output-image img").first.get_attribute("src")
        finally:
            browser.close()
    assert (tmp_path / "demo.png").stat().st_size > 0
    shown, drawn = np.asarray(fetch_image(shown_src)), np.asarray(fetch_image(drawn_src))
    assert shown.shape == drawn.shape
    changed = (shown != drawn).any(-1).mean()  # the boxes and labels
    assert 0.005 < changed < 0.9, changed  # boxes drawn on the same image, not another image


def fetch_image(url: str) -> Image.Image:
    import httpx

    return Image.open(io.BytesIO(httpx.get(url, timeout=30).content)).convert("RGB")


def call_detect(server: str, image: dict, queries: str = "star, red circle", model: str = DEFAULT_NAME):
    """One request through Gradio's HTTP API: ('complete' | 'error', data)."""
    import httpx

    payload = {"data": [image, queries, "", "", None, model, 0.6, 0.5, 100]}
    event = httpx.post(f"{server}/gradio_api/call/detect", json=payload, timeout=30).json()["event_id"]
    text = httpx.get(f"{server}/gradio_api/call/detect/{event}", timeout=300).text
    kind = text.split("event: ")[-1].split("\n")[0].strip()
    data = text.split("data: ")[-1].strip()
    return kind, json.loads(data) if data.startswith("[") else data


def upload(server: str, name: str, content: bytes):
    import httpx

    return httpx.post(f"{server}/gradio_api/upload", files={"files": (name, content)}, timeout=60)


def test_twenty_concurrent_requests_are_all_served(server):
    path = upload(server, "scene.png", BUNDLED_SCENE.read_bytes()).json()[0]
    image = {"path": path, "meta": {"_type": "gradio.FileData"}}
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: call_detect(server, image), range(20)))
    assert [kind for kind, _ in results] == ["complete"] * 20, results
    tables = [data[2]["data"] for _, data in results]
    assert all(table and table == tables[0] for table in tables)  # the same answer for everyone


def test_uploads_over_the_cap_are_refused(server):
    assert upload(server, "scene.png", BUNDLED_SCENE.read_bytes()).status_code == 200
    big = upload(server, "big.png", os.urandom(2 * 1024 * 1024))
    assert big.status_code == 413, big.text


def test_user_paths_never_reach_the_file_system(server, tmp_path):
    import httpx

    private = tmp_path / "private.png"
    Image.new("RGB", (64, 64), (255, 0, 0)).save(private)
    kind, data = call_detect(server, {"path": str(private), "meta": {"_type": "gradio.FileData"}})
    assert kind == "error" and str(tmp_path) not in data, data  # Gradio refuses it; the page names no path
    path = upload(server, "scene.png", BUNDLED_SCENE.read_bytes()).json()[0]
    image = {"path": path, "meta": {"_type": "gradio.FileData"}}
    for model in (str(DEFAULT_MODEL), "../default_model", "/etc"):
        kind, data = call_detect(server, image, model=model)  # refused by the picker, then by the registry
        assert kind == "error" and ("not in the list of choices" in data or "unknown model" in data), (model, data)
    assert httpx.get(f"{server}/gradio_api/file={private}", timeout=30).status_code in (403, 404)

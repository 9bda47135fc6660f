"""The Gradio page: image + free-text queries in, labelled boxes, a table and a JSON file out.

Everything the page does is a function of `ovdet.demo.callbacks`; this file lays out the
components, wires the events and starts the server with its limits (upload size and storage,
queue, request timeout, sessions kept; the HTTP limits are in `ovdet.demo.http_server`,
`ovdet.demo.request_limits` and `ovdet.demo.route_guard`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

# Gradio phones home for analytics and version checks unless told not to; the demo runs offline.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from ovdet.demo import callbacks  # noqa: E402
from ovdet.demo.examples import example_scenes  # noqa: E402
from ovdet.demo.http_server import RunningServer  # noqa: E402
from ovdet.demo.image_input import ImageInput  # noqa: E402
from ovdet.demo.model_registry import ModelRegistry  # noqa: E402
from ovdet.demo.model_worker import ModelWorker, RequestTimeout  # noqa: E402
from ovdet.demo.page_blocks import DemoBlocks  # noqa: E402
from ovdet.demo.request_limits import RequestLimits  # noqa: E402
from ovdet.demo.route_guard import RouteGuard  # noqa: E402
from ovdet.demo.upload_store import UploadStore  # noqa: E402

TITLE = "ovdet: detect anything you can name"
HELP = f"""Pick an example scene or give an image (upload, paste or webcam), type what to find (one query per
line or comma separated, at most {callbacks.MAX_QUERIES}) and press **Detect**. Optional: negative queries (a box
that matches one at least as well as its own query is dropped) and an image exemplar (click two corners of a box
on the image: the first click is marked and the second draws the box in the Detections panel; or type
`x1,y1,x2,y2`, or upload a crop): the object in it becomes the query `exemplar 1`. Moving a slider
re-filters the last result without running the model again."""
KEPT_DOWNLOADS = 64  # JSON files kept on the server for download; older ones are deleted
# Browser sessions whose state (last outputs for re-filtering, input values) Gradio keeps; the least
# recently used go first. Gradio's default, 10,000, let memory grow with every new visitor.
MAX_SESSIONS = 128
FAILED = "the request failed inside the server (its log has the details); try again or another image"
log = logging.getLogger("ovdet.demo")


class DemoServer:
    """The page's event handlers around a model registry, a bounded model worker and a download folder.

    Args:
        registry: the models the page offers, found by the server.
        worker: runs model calls one at a time within the request timeout.
        downloads: server-made folder the JSON downloads are written to.
    """

    def __init__(self, registry: ModelRegistry, worker: ModelWorker, downloads: Path):
        self.registry, self.worker, self.downloads = registry, worker, downloads
        self.downloads.mkdir(parents=True, exist_ok=True)

    def run(self, image, queries, negatives=None, box=None, crop=None, model=None, threshold=0.6, nms=0.5,
            max_detections=100):
        """The Detect button: a forward pass, then everything the page shows (the defaults of `None` make the
        optional inputs optional in the API; no model means the default one)."""
        model = self.registry.default if model is None else model
        with _page_errors():
            callbacks.parse_queries(queries, "queries")  # the caps, before anything heavy
            callbacks.parse_queries(negatives, "negative queries")
            image, state, dets = self.worker.call(self._detect, model, image, queries, negatives, box, crop,
                                                  threshold, nms, max_detections)
            return (state, *self._outputs(image, state, dets, callbacks.summary(state, dets)))

    def refilter(self, state, image, threshold, nms, max_detections):
        """A slider moved: new detections from the kept outputs, no forward pass."""
        if state is None or image is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        with _page_errors():
            start = time.perf_counter()
            dets = callbacks.refilter(state, threshold, nms, max_detections)
            line = callbacks.summary(state, dets, time.perf_counter() - start)
            return self._outputs(callbacks.check_image(image), state, dets, line)

    def click(self, clicks, image, evt: gr.SelectData):
        """A click on the image: the first marks a corner, the second completes the exemplar box."""
        with _page_errors():
            clicks, box = callbacks.box_from_clicks(clicks, evt.index)
            return clicks, box, callbacks.mark_exemplar(image, clicks, box)

    def _detect(self, model, image, *args):
        """On the model worker, within the timeout: load the model, decode the upload, run the model."""
        detector = self.registry.get(model)
        image = callbacks.check_image(image)
        return (image, *callbacks.run_detection(detector, model, image, *args))

    def _outputs(self, image, state, dets, line):
        drawn = callbacks.draw(image, dets, state.untrained)
        return drawn, callbacks.table_rows(dets), line, self._write_json(callbacks.to_json(state, dets))

    def _write_json(self, records: list[dict]) -> str:
        """One JSON file per result, in the server's own folder; only the newest few are kept."""
        path = self.downloads / f"detections-{uuid.uuid4().hex[:12]}.json"
        path.write_text(json.dumps(records, indent=2))
        old = sorted(self.downloads.glob("detections-*.json"), key=lambda p: p.stat().st_mtime)[:-KEPT_DOWNLOADS]
        for stale in old:
            stale.unlink(missing_ok=True)
        return str(path)


@contextmanager
def _page_errors():
    """Errors -> one plain line on the page: ValueError and timeouts as they are (paths removed),
    anything else logged with its traceback and shown as FAILED (its message may name server files)."""
    try:
        yield
    except gr.Error:
        raise
    except (ValueError, RequestTimeout) as err:
        raise gr.Error(callbacks.plain_message(err, with_type=False), print_exception=False) from None
    except Exception:
        log.exception("ovdet demo: a request failed")
        raise gr.Error(FAILED, print_exception=False) from None


def build_app(registry: ModelRegistry, timeout_s: float = 60.0, workdir: Path | None = None,
              max_sessions: int = MAX_SESSIONS) -> gr.Blocks:
    """The demo page as gr.Blocks (not launched); `workdir` holds example scenes and JSON downloads.
    Every API input and output has a label (its name in `/gradio_api/info`)."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="ovdet-demo-"))
    server = DemoServer(registry, ModelWorker(timeout_s), workdir / "downloads")
    with DemoBlocks(title=TITLE, analytics_enabled=False) as app:
        gr.Markdown(f"# {TITLE}\n{HELP}")
        state, clicks = gr.State(None), gr.State([])
        with gr.Row():
            with gr.Column():
                image = ImageInput(label="Image", type="pil", sources=["upload", "clipboard", "webcam"],
                                   elem_id="input-image")
                queries = gr.Textbox(label="Queries", lines=3, placeholder="one per line or comma separated",
                                     elem_id="queries")
                negatives = gr.Textbox(label="Negative queries (optional)", placeholder="e.g. toy car",
                                       elem_id="negatives")
                with gr.Accordion("Image exemplar (optional, one-shot)", open=False):
                    box = gr.Textbox(label="Exemplar box x1,y1,x2,y2 (pixels; or click two corners on the image)",
                                     elem_id="exemplar-box")
                    crop = ImageInput(label="Exemplar crop", type="pil", sources=["upload", "clipboard"])
                model = gr.Dropdown(registry.names, value=registry.default, label="Model", elem_id="model")
                threshold = gr.Slider(0.0, 1.0, value=registry.threshold(registry.default), step=0.01,
                                      label="Score threshold")  # the default model's own (embedded: 0.39)
                nms = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="NMS IoU (1 = off)")
                max_detections = gr.Slider(1, 300, value=100, step=1, label="Maximum detections")
                detect = gr.Button("Detect", variant="primary", elem_id="detect")
            with gr.Column():
                drawn = gr.Image(label="Detections", type="pil", format="png", interactive=False,  # png: lossless
                                 elem_id="output-image")
                table = gr.Dataframe(headers=callbacks.TABLE_HEADERS, interactive=False, label="Detections table",
                                     elem_id="results")
                timing = gr.Markdown(label="Summary", elem_id="timing")
                download = gr.File(label="Detections as JSON (same schema as `ovdet detect --out`)",
                                   interactive=False, elem_id="json")
        gr.Examples(example_scenes(workdir / "examples"), inputs=[image, queries], label="Example scenes",
                    cache_examples=False)  # Gradio's example cache is a folder its file route serves

        knobs = [threshold, nms, max_detections]
        outputs = [drawn, table, timing, download]
        # First clear the last run's status line and error badges (not queued: it answers at once).
        detect.click(cleared_outputs, None, outputs, queue=False, api_name=False, show_progress="hidden").then(
            server.run, [image, queries, negatives, box, crop, model, *knobs], [state, *outputs],
            concurrency_limit=1, concurrency_id="model", api_name="detect")
        for knob in knobs:
            knob.change(server.refilter, [state, image, *knobs], outputs, api_name=False, trigger_mode="always_last")
        image.change(lambda: (None, [], ""), None, [state, clicks, box], api_name=False)  # old outputs are stale
        image.select(server.click, [clicks, image], [clicks, box, drawn], api_name=False)
    app.state_session_capacity = max_sessions  # read when the page is mounted
    app.ovdet_server = server  # the handlers, for the tests and launch()
    return app


def _forget(app: gr.Blocks, paths: set[str]) -> None:
    """Gradio keeps the name of every file it put in its cache for good (`temp_files` of each component):
    forget those the upload storage has deleted, so the sets stay as small as the storage."""
    for names in app.temp_file_sets:
        names.difference_update(paths)


def cleared_outputs():
    """What the outputs show while a new run starts: the old status line and error badges gone."""
    return gr.skip(), gr.skip(), "", gr.skip()


def launch(
    registry: ModelRegistry,
    sock: socket.socket,
    timeout_s: float = 60.0,
    max_file_size: int = 10 * 1024**2,
    max_upload_storage: int = 256 * 1024**2,
    queue_size: int = 64,
    header_timeout_s: float = 10.0,
    body_idle_s: float = 20.0,
    body_deadline_s: float = 120.0,
    max_per_client: int = 32,
    max_uploads_per_client: int = 2,
    max_sessions: int = MAX_SESSIONS,
    block: bool = True,
) -> RunningServer:
    """Serve the page on `sock` (from `http_server.bind_port`): requests wait in a queue of `queue_size`
    (more are refused), the model runs one request at a time, each at most `timeout_s` seconds;
    uploads over `max_file_size` are refused and all kept uploads stay under `max_upload_storage`;
    a client has `header_timeout_s` for a request's headers, may pause `body_idle_s` in a body and must
    finish it within `body_deadline_s`; one client address holds at most `max_per_client` connections
    and `max_uploads_per_client` uploads; the state of at most `max_sessions` browser sessions is kept.
    Only the upload folder is served; URLs are never fetched. The work folder (uploads, outputs, downloads) is removed when the server stops."""
    workdir = Path(tempfile.mkdtemp(prefix="ovdet-demo-"))
    previous_temp = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "gradio")  # read by every component and Gradio's routes
    workers = []

    def cleanup():
        for worker in workers:
            worker.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)
        if previous_temp is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous_temp

    try:
        store = UploadStore(workdir / "gradio", max_upload_storage)
        app = build_app(registry, timeout_s, workdir, max_sessions)
        store.on_delete = lambda paths: _forget(app, paths)
        workers.append(app.ovdet_server.worker)
        app.queue(max_size=queue_size, default_concurrency_limit=1)
        page = gr.mount_gradio_app(FastAPI(), app, path="/", max_file_size=max_file_size, show_error=False,
                                   ssr_mode=False, run_history=False, footer_links=["api", "gradio"])
        # Gradio checks that an input file was uploaded only once `launch()` has run; mounted, it never has,
        # and any server path a client names would be read. Mark it launched so the check applies.
        app.has_launched = True
        store.pin_existing()  # Gradio's copies of the example scenes
        guard = RouteGuard(page, store.root, lambda: app.fns.keys())
        limits = RequestLimits(guard, max_body=2 * max_file_size + 1024**2, body_idle_s=body_idle_s,
                               body_deadline_s=body_deadline_s, max_uploads_per_client=max_uploads_per_client,
                               before_response=lambda upload: store.prune(0 if upload else 30))
        running = RunningServer(limits, sock, max_connections=4 * queue_size + 32, header_timeout_s=header_timeout_s,
                                max_per_client=max_per_client, on_close=[cleanup]).start()
        running.blocks, running.uploads = app, store
    except BaseException:
        cleanup()
        raise
    print(f"ovdet demo: serving on {running.url} (Ctrl-C stops it)", file=sys.stderr, flush=True)
    if block:
        running.wait()
    return running

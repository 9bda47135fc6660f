"""The Gradio page: image + free-text queries in, labelled boxes, a table and a JSON file out.

Everything the page does is a function of `ovdet.demo.callbacks`; this file only lays out the
components, wires the events and sets the server's limits (upload size, queue, request timeout).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from pathlib import Path

# Gradio phones home for analytics and version checks unless told not to; the demo runs offline.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from ovdet.demo import callbacks  # noqa: E402
from ovdet.demo.examples import example_scenes  # noqa: E402
from ovdet.demo.model_registry import ModelRegistry  # noqa: E402
from ovdet.demo.model_worker import ModelWorker, RequestTimeout  # noqa: E402

TITLE = "ovdet: detect anything you can name"
HELP = """Pick an example scene or give an image (upload, paste or webcam), type what to find (one query per
line or comma separated) and press **Detect**. Optional: negative queries (a box that matches one at least
as well as its own query is dropped) and an image exemplar (click two corners of a box on the image, type
`x1,y1,x2,y2`, or upload a crop): the object in it becomes the query `exemplar 1`. Moving a slider
re-filters the last result without running the model again."""
KEPT_DOWNLOADS = 64  # JSON files kept on the server for download; older ones are deleted


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

    def run(self, image, queries, negatives, box, crop, model, threshold, nms, max_detections):
        """The Detect button: a forward pass, then everything the page shows."""
        try:
            detector = self.registry.get(model)
            state, dets = self.worker.call(callbacks.run_detection, detector, model, image, queries, negatives,
                                           box, crop, threshold, nms, max_detections)
        except (ValueError, RequestTimeout) as err:
            raise gr.Error(str(err)) from None
        return (state, *self._outputs(image, state, dets, callbacks.summary(state, dets)))

    def refilter(self, state, image, threshold, nms, max_detections):
        """A slider moved: new detections from the kept outputs, no forward pass."""
        if state is None or image is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        start = time.perf_counter()
        try:
            dets = callbacks.refilter(state, threshold, nms, max_detections)
        except ValueError as err:
            raise gr.Error(str(err)) from None
        return self._outputs(image, state, dets, callbacks.summary(state, dets, time.perf_counter() - start))

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


def build_app(registry: ModelRegistry, timeout_s: float = 60.0, workdir: Path | None = None) -> gr.Blocks:
    """The demo page as gr.Blocks (not launched); `workdir` holds example scenes and JSON downloads."""
    workdir = Path(workdir or tempfile.mkdtemp(prefix="ovdet-demo-"))
    server = DemoServer(registry, ModelWorker(timeout_s), workdir / "downloads")
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"# {TITLE}\n{HELP}")
        state, clicks = gr.State(None), gr.State([])
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Image", type="pil", sources=["upload", "clipboard", "webcam"],
                                 elem_id="input-image")
                queries = gr.Textbox(label="Queries", lines=3, placeholder="one per line or comma separated",
                                     elem_id="queries")
                negatives = gr.Textbox(label="Negative queries (optional)", placeholder="e.g. toy car",
                                       elem_id="negatives")
                with gr.Accordion("Image exemplar (optional, one-shot)", open=False):
                    box = gr.Textbox(label="Exemplar box x1,y1,x2,y2 (pixels; or click two corners on the image)",
                                     elem_id="exemplar-box")
                    crop = gr.Image(label="Exemplar crop", type="pil", sources=["upload", "clipboard"])
                model = gr.Dropdown(registry.names, value=registry.default, label="Model", elem_id="model")
                threshold = gr.Slider(0.0, 1.0, value=0.6, step=0.01, label="Score threshold")
                nms = gr.Slider(0.05, 1.0, value=0.5, step=0.05, label="NMS IoU (1 = off)")
                max_detections = gr.Slider(1, 300, value=100, step=1, label="Maximum detections")
                detect = gr.Button("Detect", variant="primary", elem_id="detect")
            with gr.Column():
                drawn = gr.Image(label="Detections", type="pil", format="png", interactive=False,  # png: lossless
                                 elem_id="output-image")
                table = gr.Dataframe(headers=callbacks.TABLE_HEADERS, interactive=False, elem_id="results")
                timing = gr.Markdown(elem_id="timing")
                download = gr.File(label="Detections as JSON (same schema as `ovdet detect --out`)",
                                   interactive=False, elem_id="json")
        gr.Examples(example_scenes(workdir / "examples"), inputs=[image, queries], label="Example scenes")

        knobs = [threshold, nms, max_detections]
        outputs = [drawn, table, timing, download]
        detect.click(server.run, [image, queries, negatives, box, crop, model, *knobs], [state, *outputs],
                     concurrency_limit=1, concurrency_id="model", api_name="detect")
        for knob in knobs:
            knob.change(server.refilter, [state, image, *knobs], outputs, api_name=False, trigger_mode="always_last")
        image.change(lambda: (None, [], ""), None, [state, clicks, box], api_name=False)  # old outputs are stale
        image.select(_click, [clicks], [clicks, box], api_name=False)
    return app


def _click(clicks, evt: gr.SelectData):
    return callbacks.box_from_clicks(clicks, evt.index)


def launch(
    registry: ModelRegistry,
    host: str = "127.0.0.1",
    port: int = 7860,
    timeout_s: float = 60.0,
    max_file_size: str = "10mb",
    queue_size: int = 64,
    block: bool = True,
):
    """Serve the page; requests wait in a queue of `queue_size` (more are refused), the model runs one
    request at a time, each at most `timeout_s` seconds, and uploads over `max_file_size` are refused."""
    app = build_app(registry, timeout_s)
    app.queue(max_size=queue_size, default_concurrency_limit=1)
    app.launch(server_name=host, server_port=port, max_file_size=max_file_size, show_error=True,
               prevent_thread_lock=not block, ssr_mode=False, quiet=False)
    return app

"""`ovdet demo`: the interactive Gradio page, served on this machine (127.0.0.1) unless told otherwise."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ovdet.cli import options

INSTALL_HINT = "ovdet demo needs gradio: install with pip install 'ovdet[demo]'"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="interactive web demo (Gradio): draw detections for free-text queries",
        description="Serve the interactive demo: an image and free-text queries in, labelled boxes, a table and "
        "JSON out; negative queries and one-shot image exemplars. Needs the demo extra: pip install 'ovdet[demo]'.",
        formatter_class=options.Formatter,
    )
    p.add_argument("--model", default=None, metavar="PATH_OR_ID",
                   help="ovdet model folder, CLIP folder or cached hub id; default: the embedded ShapeWorld model")
    p.add_argument("--models-dir", dest="models_dirs", action="append", default=[], type=Path, metavar="DIR",
                   help="also offer every ovdet model folder found in DIR (repeatable)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes the demo to your network")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "int8"], default=None,
                   help="vision tower precision of every model served (as `ovdet detect --precision`); default: fp32")
    options.add_runtime(p)
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="longest a request may take")
    p.add_argument("--max-file-size", default="10mb", help="largest upload accepted (e.g. 10mb, 500kb)")
    p.add_argument("--max-upload-storage", default="256mb",
                   help="all uploads and outputs kept on the server together; the oldest are deleted past it")
    p.add_argument("--queue-size", type=int, default=64, help="requests that may wait; more are refused")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if args.queue_size < 1:
        raise ValueError(f"--queue-size must be >= 1, got {args.queue_size}")
    if not args.timeout > 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {args.timeout}")
    try:
        from ovdet.demo.app import launch
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] != "gradio":
            raise
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    import torch

    from ovdet.assets import DEFAULT_MODEL
    from ovdet.demo.http_server import bind_port
    from ovdet.demo.model_registry import ModelRegistry
    from ovdet.demo.upload_store import parse_size

    max_file_size = parse_size(args.max_file_size, "--max-file-size")
    max_storage = parse_size(args.max_upload_storage, "--max-upload-storage")
    if max_storage < max_file_size:
        raise ValueError(f"--max-upload-storage ({args.max_upload_storage}) must be at least --max-file-size "
                         f"({args.max_file_size})")
    sock = bind_port(args.host, args.port)  # a busy port fails now, not after loading the model
    try:
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        registry = ModelRegistry.discover(args.model, DEFAULT_MODEL, args.models_dirs, device)
        registry.precision, registry.runtime = args.precision, args.runtime
        registry.get(registry.default)  # load before serving: the first request should not wait for it
        print(f"ovdet demo: models {registry.names}", file=sys.stderr)
        launch(registry, sock, timeout_s=args.timeout, max_file_size=max_file_size, max_upload_storage=max_storage,
               queue_size=args.queue_size)
    finally:
        sock.close()
    return 0

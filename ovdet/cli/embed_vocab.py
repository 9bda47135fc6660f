"""`ovdet embed-vocab`: encode a fixed vocabulary once and write it for `detect --vocab-cache`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ovdet.cli import options


def add_parser(sub) -> None:
    p = sub.add_parser(
        "embed-vocab",
        help="write a fixed vocabulary's text embeddings to a file (LVIS's 1203 names, encoded once)",
        description="Encode every name with every prompt template using the model's frozen text tower and "
        "write them, with the names and the model's fingerprint, to a .safetensors file. "
        "`ovdet detect --vocab-cache FILE` then never runs the text tower for these names; a file "
        "made with another model is refused.",
        formatter_class=options.Formatter,
    )
    p.add_argument("--model", default=None, metavar="PATH_OR_ID",
                   help="ovdet model folder or CLIP folder/id; default: the embedded ShapeWorld model")
    p.add_argument("--vocab", required=True, metavar="NAMES",
                   help="coco (80 names), a .txt file (one name a line) or a COCO/LVIS .json (its categories)")
    p.add_argument("--templates", default=None,
                   help="prompt templates: single, photo, clip7, clip80 or a .json list; default: the model's own (its config.json 'templates', else single)")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the .safetensors file to write")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, or auto")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ovdet.assets import resolve_model
    from ovdet.models.detector import Detector
    from ovdet.text.vocab_cache import resolve_vocabulary

    names = resolve_vocabulary(args.vocab)  # fail fast, before loading a model
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model_name = resolve_model(args.model)
    detector = Detector.from_pretrained(model_name).to(device)
    templates = detector.prompt_templates(args.templates)
    cache = detector.text_encoder.save_vocab(args.out, names, templates, model=model_name)
    t, q, e = cache.embeds.shape
    print(f"wrote {args.out}: {q} names x {t} templates, {e}-d embeddings, model {model_name}")
    return 0

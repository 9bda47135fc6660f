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
    options.add_device(p)
    options.add_overwrite(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ovdet.assets import resolve_model
    from ovdet.models.detector import Detector
    from ovdet.text.queries import validate_queries
    from ovdet.text.templates import resolve_templates
    from ovdet.text.vocab_cache import VocabCache, check_vocab_cache_target, resolve_vocabulary, write_vocab_cache

    # Every input and the output checked first: a model load takes seconds.
    names = validate_queries(resolve_vocabulary(args.vocab))
    if args.templates is not None:
        resolve_templates(args.templates)
    check_vocab_cache_target(args.out, "--out", args.overwrite)
    device = options.resolve_device(args.device)
    model_name = resolve_model(args.model)
    detector = Detector.from_pretrained(model_name).to(device)
    templates = list(resolve_templates(detector.prompt_templates(args.templates)))
    encoder = detector.text_encoder
    embeds = encoder.encode(names, templates, reduce=False).float().cpu()  # [T, Q, E]
    cache = VocabCache(list(names), templates, embeds, encoder.fingerprint(), model_name)
    write_vocab_cache(args.out, cache, overwrite=args.overwrite)
    t, q, e = embeds.shape
    print(f"wrote {args.out}: {q} names x {t} templates, {e}-d embeddings, model {model_name}")
    return 0

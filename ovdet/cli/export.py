"""`ovdet export --format onnx`: write a detector as an ONNX file, checked against onnxruntime."""

from __future__ import annotations

import argparse
from pathlib import Path

from ovdet.cli import options
from ovdet.errors import OvdetError

FORMATS = ("onnx",)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a detector to ONNX (baked vocabulary or embeddings input), checked with onnxruntime",
        description="Export the image -> (pred_boxes, logits, objectness) path to ONNX (fp32, dynamic batch). "
        "--variant image bakes the vocabulary's text embeddings in (give -q or --vocab-cache); --variant embeds "
        "takes query_embeds [Q, E] as a second input. Crop re-scoring is included when the model has it. "
        "The file is then run with onnxruntime next to torch on the same images: the max abs difference and "
        "both timings are printed and written, with the vocabulary and preprocessing, to OUT.json. "
        "(`ovdet export-ckpt` is different: it turns a training checkpoint into a model folder.)",
        formatter_class=options.Formatter,
    )
    p.add_argument("--format", choices=FORMATS, default="onnx", help="export format")
    p.add_argument("--model", default=None, metavar="PATH_OR_ID",
                   help="ovdet model folder or CLIP folder/id; default: the embedded ShapeWorld model")
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument("--variant", choices=["image", "embeds"], default="image",
                   help="image: vocabulary baked in; embeds: query embeddings are an input")
    p.add_argument("-q", "--query", dest="queries", action="append", default=[], metavar="TEXT",
                   help="a query of the baked vocabulary; repeat for several")
    p.add_argument("--vocab-cache", type=Path, default=None, metavar="FILE",
                   help="bake the names of an `ovdet embed-vocab` file (its embeddings, no text tower run)")
    p.add_argument("--templates", default=None,
                   help="prompt templates for -q: single, photo, clip7, clip80, .json; default: the model's own")
    p.add_argument("--no-rescore", action="store_true",
                   help="leave the model's region re-scoring out (crop or one-pass region scoring): head scores only")
    p.add_argument("--batch-size", type=int, default=2,
                   help="images in the onnxruntime check (the file itself takes any batch)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")
    p.add_argument("--runs", type=int, default=3, help="timed calls of the check (median)")
    options.add_overwrite(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ovdet.assets import resolve_model
    from ovdet.models.detector import Detector

    queries = check_args(args)  # every input and output checked before the model load and the slow export
    model_name = resolve_model(args.model)
    detector = Detector.from_pretrained(model_name).eval()
    if args.vocab_cache is not None:
        queries = queries or detector.load_vocab(args.vocab_cache)
    templates = detector.prompt_templates(args.templates)
    embeds = detector.encode_queries(queries, templates) if queries else None
    rescore = not args.no_rescore
    from ovdet.export.onnx import reference_embeds

    reference = reference_embeds(detector, queries if args.variant == "image" else None, templates)
    _export(detector, args, embeds, rescore, reference)
    info = {
        "model": model_name, "variant": args.variant, "queries": queries if args.variant == "image" else None,
        "templates": templates, "rescore": rescore and detector.rescorer is not None,
        "image_size": detector.image_size, "image_mean": list(detector.backbone.image_mean),
        "image_std": list(detector.backbone.image_std),
        "inputs": ["pixel_values"] + (["query_embeds"] if args.variant == "embeds" else []),
        "batch_size": "any",
        "outputs": ["pred_boxes (cxcywh, 0..1 of the padded square)", "logits [B, P, Q]", "objectness [B, P]"],
    }  # fmt: skip
    if not args.no_check:
        info["check"] = _check(detector, args, embeds, rescore, reference)
    sidecar = args.out.with_suffix(".json")
    from ovdet.inference.results_file import write_object

    write_object(info, sidecar)
    print(f"wrote {args.out} and {sidecar}")
    return 0


def check_args(args: argparse.Namespace) -> list[str]:
    """Option values, inputs and both output files (`--out` and its `.json` sidecar), in one line each;
    returns the validated queries."""
    from ovdet.text.queries import validate_queries
    from ovdet.safe_write import check_output_path
    from ovdet.text.templates import resolve_templates

    if args.batch_size < 1:
        raise OvdetError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.runs < 1:
        raise OvdetError(f"--runs must be >= 1 (timed calls of the check), got {args.runs}")
    if args.variant == "image" and not args.queries and args.vocab_cache is None:
        raise OvdetError("--variant image bakes a vocabulary in: give -q TEXT (repeatable) or --vocab-cache FILE")
    queries = validate_queries(args.queries) if args.queries else []
    if args.vocab_cache is not None and not args.vocab_cache.is_file():
        raise OvdetError(f"--vocab-cache '{args.vocab_cache}' not found; write one with `ovdet embed-vocab`")
    if args.templates is not None:
        resolve_templates(args.templates)
    if args.out.suffix != ".onnx":
        raise OvdetError(f"--out should name a .onnx file, got '{args.out}'")
    sidecar = args.out.with_suffix(".json")
    check_output_path(args.out, "--out", inputs=[args.vocab_cache], suffixes=(".onnx",), overwrite=args.overwrite)
    check_output_path(sidecar, "the sidecar of --out", inputs=[args.vocab_cache], overwrite=args.overwrite)
    return queries


def _export(detector, args, embeds, rescore: bool, reference) -> None:
    from ovdet.export.onnx import export_onnx

    print(f"exporting {args.variant} variant to {args.out} (this takes a while for a ViT) ...")
    export_onnx(detector, args.out, args.variant, embeds, rescore=rescore, reference=reference)


def _check(detector, args, embeds, rescore: bool, reference) -> dict:
    """onnxruntime vs torch on `--batch-size` images: the bundled scene and differently sized ones."""
    import torch

    from ovdet.benchmark.workload import synthetic_images
    from ovdet.export.onnx import check_onnx
    from ovdet.image_io import load_image

    scene = Path(__file__).resolve().parents[1] / "assets" / "scene.png"
    images = [load_image(scene), *synthetic_images(1)] * args.batch_size
    pixels = detector.preprocessor.to_model(images[: args.batch_size])
    if embeds is None:  # embeds variant without a vocabulary: any unit vectors exercise it
        embeds = torch.nn.functional.normalize(torch.randn(5, detector.text_encoder.embed_dim), dim=-1)
    result = check_onnx(args.out, detector, pixels, embeds, baked=args.variant == "image", rescore=rescore, runs=args.runs,
                        reference=reference)
    diff = max(result["max_abs_diff"].values())
    print(f"onnxruntime vs torch (batch {len(pixels)}): max abs difference {diff:.3g} "
          f"({', '.join(f'{k} {v:.2g}' for k, v in result['max_abs_diff'].items())}); "
          f"median per call: onnxruntime {result['ort_s']:.3f} s, torch {result['torch_s']:.3f} s")  # fmt: skip
    return result

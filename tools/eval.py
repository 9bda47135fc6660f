"""Hydra entry for evaluation (`conf/eval.yaml`): the same `evaluate_model` that `ovdet eval` calls.

The model key is `model_path` (not `model`): `model=` selects the training config group in conf/model/.

    python tools/eval.py model_path=MODEL annotations=val.json images=DIR split=ovcoco templates=clip7
    python tools/eval.py annotations=val.json predictions=preds.json split=ovcoco   # saved predictions
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

KEYS = (
    "split", "protocol", "vocabulary", "templates", "template_mode", "predictions", "out", "report",
    "batch_size", "workers", "max_dets", "score_threshold", "nms", "accelerator", "devices", "progress", "overwrite",
)  # fmt: skip
RUN_KEYS = ("batch_size", "workers", "max_dets", "score_threshold", "nms", "templates", "template_mode",
            "accelerator", "devices", "progress")  # fmt: skip


@hydra.main(config_path="../conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from ovdet.cli.evaluate import print_summary, scores_saved_predictions
    from ovdet.cli.options import check_values
    from ovdet.evaluation.evaluate import evaluate_model

    options = OmegaConf.to_container(cfg, resolve=True)
    saved = scores_saved_predictions(options["model_path"], options["predictions"], options["images"])
    if options["model_path"] is None and not saved:  # as `ovdet eval`: the embedded model; saved predictions
        from ovdet.assets import resolve_model  # that exist are scored, never written

        options["model_path"] = resolve_model(None)
    kwargs = {k: options[k] for k in KEYS if options['model_path'] is not None or k not in RUN_KEYS}
    try:
        check_values(options["score_threshold"], options["nms"], options["max_dets"], max_option="max_dets")
        result = evaluate_model(options["model_path"], options["annotations"], options["images"], **kwargs)
    except (ValueError, OSError) as err:
        print(f"tools/eval.py: error: {err}", file=sys.stderr)
        sys.exit(2)
    if result is not None:  # None on non-zero DDP ranks
        print_summary(result.metrics)
        for label in ("predictions", "out", "report"):
            if options[label] is not None and (label != "predictions" or options["model_path"] is not None):
                print(f"wrote {label}: {options[label]}")


if __name__ == "__main__":
    main()

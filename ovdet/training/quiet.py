"""Silence third-party lines that tell an `ovdet train` user nothing they can act on."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# Info lines (logging) from Lightning, by the start of their message.
NOISE_LINES = (
    "💡 Tip:",  # advertisements for litlogger / litmodels
    "GPU available: False",  # on a CPU machine; "GPU available: True (cuda), used: ..." stays
    "TPU available:",
    "HPU available:",
    "Loading `train_dataloader` to estimate number of stepping batches",
    "Seed set to",
)
NOISE_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.fabric.utilities.seed")
# Warnings (regular expressions matched at the start of the message) about things done on purpose.
NOISE_WARNINGS = (
    r".*module\(s\) in eval mode",  # the frozen CLIP towers are in eval mode by design
    r".*isinstance\(treespec, LeafSpec\)",  # Lightning's own use of a deprecated torch API
    r"Experiment logs directory .* exists and is not empty",  # a resumed run appends to its log
    r"Checkpoint directory .* exists and is not empty",  # a resumed run writes beside its checkpoints
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith(NOISE_LINES)


@contextmanager
def quiet_third_party() -> Iterator[None]:
    """Within the block, drop `NOISE_LINES` from Lightning's loggers and ignore `NOISE_WARNINGS`."""
    noise = _DropNoise()
    loggers = [logging.getLogger(name) for name in NOISE_LOGGERS]
    for logger in loggers:
        logger.addFilter(noise)
    try:
        with warnings.catch_warnings():
            for pattern in NOISE_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(noise)

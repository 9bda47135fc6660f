"""The tokenizer of a model folder: its own files, or OpenAI's BPE where that is what the text tower was built for.

A text tower indexes its token embedding with every id the tokenizer emits, so a tokenizer with more
tokens than the tower (e.g. OpenAI's 49408-token BPE standing in for a folder's missing files) ends
in `IndexError: index out of range in self` deep inside torch; it is refused here instead, naming
the folder and the files it lacks.
"""

from __future__ import annotations

import json
from pathlib import Path

from ovdet.errors import ModelNotAvailableError
from ovdet.towers.library_path import library_path

TOKENIZER_FILES = ("tokenizer.json", "vocab.json + merges.txt")


def clip_folder_tokenizer(folder: Path, vocab_size: int):
    """The folder's own CLIP tokenizer when it has one, else OpenAI's BPE (derived offline) if it fits.

    Args:
        folder: a transformers CLIP / OWL-ViT / OWLv2 folder.
        vocab_size: rows of the text tower's token embedding; no token id may reach it.
    """
    from ovdet.text.tokenizer import clip_tokenizer

    has_json, has_vocab, has_merges = ((folder / n).is_file() for n in ("tokenizer.json", "vocab.json", "merges.txt"))
    if has_json or (has_vocab and has_merges):
        tokenizer = _own_tokenizer(folder)
        if len(tokenizer) > vocab_size:
            raise ModelNotAvailableError(
                f"the tokenizer in '{folder}' has {len(tokenizer)} tokens but its text tower only {vocab_size}: they do "
                "not belong together; copy the model's own tokenizer files into the folder"
            )
        return tokenizer
    if has_vocab:
        raise ModelNotAvailableError(f"model folder '{folder}' has vocab.json but no merges.txt (or tokenizer.json): "
                                     "copy the model's tokenizer files again")
    tokenizer = clip_tokenizer()
    if len(tokenizer) > vocab_size:
        lacking = " or ".join(TOKENIZER_FILES)
        raise ModelNotAvailableError(
            f"model folder '{folder}' has no tokenizer ({lacking} missing) and its text tower holds {vocab_size} tokens, "
            f"not the {len(tokenizer)} of OpenAI's BPE: save the model's tokenizer into it "
            "(AutoTokenizer.from_pretrained(ID).save_pretrained(DIR))"
        )
    return tokenizer


def _own_tokenizer(folder: Path):
    """The folder's CLIP tokenizer; one that ovdet saved with open_clip's text cleaning keeps it."""
    from transformers import CLIPTokenizer

    from ovdet.text.cleaned_tokenizer import TEXT_CLEANING, CleanedCLIPTokenizer

    try:
        settings = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        settings = {}
    cls = CleanedCLIPTokenizer if isinstance(settings, dict) and settings.get("text_cleaning") == TEXT_CLEANING \
        else CLIPTokenizer
    try:
        with library_path(folder) as path:
            return cls.from_pretrained(str(path))
    except Exception as err:  # the tokenizers library raises bare Exceptions on a broken file
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ModelNotAvailableError(f"the tokenizer files in '{folder}' cannot be read ({type(err).__name__}: {first}); "
                                     "copy them again") from None


def auto_tokenizer(folder: Path, reference: str):
    """The checkpoint's own tokenizer (SigLIP: sentencepiece, SigLIP2: Gemma), from the folder."""
    from transformers import AutoTokenizer

    try:
        with library_path(folder) as path:
            return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, ImportError) as err:
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ModelNotAvailableError(f"'{reference}' has no usable tokenizer ({type(err).__name__}: {first})") from None

"""The OpenAI CLIP BPE tokenizer, built offline from the vocabulary that ships in open_clip_torch.

`transformers` wants `vocab.json` + `merges.txt`, normally fetched from a hub; the same BPE
table lies inside the `open_clip_torch` wheel (`bpe_simple_vocab_16e6.txt.gz`), so the
tokenizer is derived from it and never downloaded.
"""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Iterable
import copy
from functools import lru_cache
from pathlib import Path

from ovdet.errors import OvdetWarning

# OpenAI CLIP: 49152 - 256 - 2 merges after the header line, then 512 byte tokens and 2 specials.
_NUM_MERGES = 49152 - 256 - 2
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
CONTEXT_LENGTH = 77


def bpe_path() -> Path:
    """Path of the BPE merges file inside the installed open_clip package."""
    return Path(open_clip_tokenizer_module().default_bpe())


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """The CLIP vocabulary (token -> id, 49408 entries) and merge list, as `transformers` expects."""
    bytes_to_unicode = open_clip_tokenizer_module().bytes_to_unicode
    lines = gzip.open(bpe_path()).read().decode("utf-8").split("\n")
    merges = lines[1 : _NUM_MERGES + 1]
    byte_tokens = list(bytes_to_unicode().values())
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens]
    tokens += ["".join(m.split()) for m in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {t: i for i, t in enumerate(tokens)}, merges


def clip_tokenizer():
    """A `transformers` CLIPTokenizer with OpenAI's vocabulary and open_clip's text cleaning, built
    without any download.

    Each call returns its own copy: a tokenizer is mutable (`model_max_length`, and the padding and
    truncation its Rust backend keeps from the last call, which `save_pretrained` writes into
    tokenizer.json), so one shared instance let every user change what the next one got."""
    return copy.deepcopy(_shared_clip_tokenizer())  # ~0.25 s, against ~5 s to build one


@lru_cache(maxsize=1)
def _shared_clip_tokenizer():
    """The one built instance; never handed out (see `clip_tokenizer`)."""
    vocab, merges = clip_vocab_and_merges()
    # transformers 5 ignores vocab_file=/merges_file=; pass the tables themselves.
    from ovdet.text.cleaned_tokenizer import CleanedCLIPTokenizer

    return CleanedCLIPTokenizer(
        vocab=dict(vocab),
        merges=[tuple(m.split()) for m in merges],
        unk_token=EOS_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=CONTEXT_LENGTH,
    )


@lru_cache(maxsize=1)
def simple_tokenizer():
    """open_clip's BPE tokenizer, built once per process (its 49k-merge tables take ~0.3 s to build)."""
    module = open_clip_tokenizer_module()
    shared = getattr(module, "_tokenizer", None)  # the module builds one on import
    return shared if isinstance(shared, module.SimpleTokenizer) else module.SimpleTokenizer()


@lru_cache(maxsize=1)
def open_clip_tokenizer_module():
    """open_clip's `tokenizer.py`: open_clip's own module once open_clip is imported, else the same file run as
    `ovdet.text.open_clip_tokenizer_file` (importing the package costs 3 s; detection needs the tokenizer only)."""
    import sys

    if "open_clip" not in sys.modules:
        try:
            from ovdet.text import open_clip_tokenizer_file

            return open_clip_tokenizer_file
        except ImportError:
            pass
    import open_clip.tokenizer

    return open_clip.tokenizer


_bpe = simple_tokenizer


def token_count(text: str) -> int:
    """CLIP BPE tokens of `text`, the start and end tokens included (what a context must hold)."""
    return len(_bpe().encode(text)) + 2


def truncated_texts(texts: Iterable[str], context_length: int) -> list[str]:
    """The texts that a tokenizer with this context cuts short.

    A BPE token spans at least one UTF-8 byte, so a text of fewer bytes than the context cannot
    overflow: only long texts are tokenised (10,000 short queries cost nothing here).
    """
    return [t for t in texts if len(t.lower().encode("utf-8")) + 2 > context_length and token_count(t) > context_length]


def warn_truncated(texts: Iterable[str], context_length: int) -> list[str]:
    """Warn (`OvdetWarning`) about texts longer than the context, which the tower truncates; returns them."""
    long = truncated_texts(texts, context_length)
    if long:
        shown = ", ".join(repr(t[:60] + ("..." if len(t) > 60 else "")) for t in long[:3])
        more = f" and {len(long) - 3} more" if len(long) > 3 else ""
        warnings.warn(
            f"{len(long)} text quer{'y is' if len(long) == 1 else 'ies are'} longer than the text tower's context of "
            f"{context_length} tokens and cut to fit, so only the start is matched: {shown}{more}",
            OvdetWarning,
            stacklevel=3,
        )
    return long

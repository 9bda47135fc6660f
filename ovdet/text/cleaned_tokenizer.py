"""transformers' CLIPTokenizer with open_clip's text cleaning in front of it.

OpenAI's and open_clip's tokenizers clean every text first (ftfy, HTML entities unescaped twice,
whitespace runs joined, lower case); transformers' fast CLIPTokenizer only lower-cases. Without the
cleaning 'don’t stop' and 'rock &amp; roll guitar' get other ids than open_clip gives them, and
an OpenCLIP tower's embeddings of them move by 1.5-2.8. The cleaning is open_clip's own function.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import CLIPTokenizer

from ovdet.text.tokenizer import open_clip_tokenizer_module

TEXT_CLEANING = "open_clip"  # written to tokenizer_config.json as `text_cleaning`


def clean_text(text: str) -> str:
    """open_clip's "lower" cleaning (its SimpleTokenizer's default)."""
    module = open_clip_tokenizer_module()  # open_clip's tokenizer file, without importing the whole package
    return module.whitespace_clean(module.basic_clean(text)).lower()


def _clean_input(text):
    """A text or a batch of texts, cleaned; anything else (None, pre-split words) as it is."""
    if isinstance(text, str):
        return clean_text(text)
    if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        return [clean_text(t) for t in text]
    return text


class CleanedCLIPTokenizer(CLIPTokenizer):
    """A CLIPTokenizer that cleans each text as open_clip does before the BPE."""

    def _encode_plus(self, text, text_pair=None, *args, is_split_into_words: bool = False, **kwargs):
        if not is_split_into_words:
            text, text_pair = _clean_input(text), _clean_input(text_pair)
        return super()._encode_plus(text, text_pair, *args, is_split_into_words=is_split_into_words, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """A plain `CLIPTokenizer` folder (transformers' AutoTokenizer reads it) that records the cleaning
        as `text_cleaning: "open_clip"` in tokenizer_config.json."""
        files = super().save_pretrained(save_directory, *args, **kwargs)
        config_file = Path(save_directory) / "tokenizer_config.json"
        config = json.loads(config_file.read_text())
        config.update(tokenizer_class="CLIPTokenizer", text_cleaning=TEXT_CLEANING)
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        return files

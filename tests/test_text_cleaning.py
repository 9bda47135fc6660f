"""OpenCLIP towers tokenise as open_clip does: its text cleaning (ftfy, HTML entities, whitespace) comes first."""

import json

import open_clip
import pytest
import torch

from ovdet.text.tokenizer import clip_tokenizer
from ovdet.towers.loader import load_clip

pytestmark = pytest.mark.usefixtures("one_thread")

# Each of these got other ids than open_clip's before the cleaning (the plain ones guard the ordinary case).
TRICKY = [
    "don’t stop",  # curly apostrophe: ftfy makes it '
    "rock &amp; roll guitar",  # an HTML entity
    "salt &amp;amp; pepper",  # a double-escaped entity
    "“quoted” sign",  # curly quotes
    "cafÃ© latte",  # mojibake, mended by ftfy
    "two   dogs\n\tplaying",  # a run of whitespace with a newline and a tab
    "  red umbrella  ",  # leading and trailing spaces
    "a photo of a red umbrella.",
]


def open_clip_ids(texts: list[str]) -> list[list[int]]:
    rows = open_clip.tokenizer.SimpleTokenizer()(texts)  # [N, 77], 0-padded
    return [row[row > 0].tolist() for row in rows]


def test_ids_equal_open_clips_on_tricky_texts():
    tokenizer = clip_tokenizer()
    assert tokenizer(TRICKY)["input_ids"] == open_clip_ids(TRICKY)
    for text, ids in zip(TRICKY, open_clip_ids(TRICKY)):  # one text at a time and through `encode` too
        assert tokenizer(text)["input_ids"] == ids and tokenizer.encode(text) == ids, text


def test_open_clip_vit_text_embeddings_equal_open_clips_encode_text(tmp_path):
    from test_open_clip_vit import CONFIGS, save_open_clip_vit

    folder = save_open_clip_vit(tmp_path / "clip", CONFIGS["openai"])
    native = open_clip.create_model(f"local-dir:{folder}").eval()
    reference_tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    loaded = load_clip(folder)
    with torch.no_grad():
        diff = (loaded.text_tower(TRICKY) - native.encode_text(reference_tokenizer(TRICKY))).abs().max()
    assert float(diff) <= 1e-5


def test_open_clip_resnet_text_embeddings_equal_open_clips_encode_text(tmp_path):
    from test_open_clip_tower import tiny_resnet_clip

    from ovdet.towers.open_clip_io import save_open_clip

    model = tiny_resnet_clip().eval()
    loaded = load_clip(save_open_clip(model, tmp_path / "clip"))
    with torch.no_grad():
        diff = (loaded.text_tower(TRICKY) - model.encode_text(open_clip.get_tokenizer("RN50")(TRICKY, 16))).abs().max()
    assert float(diff) <= 1e-5


def test_saved_tokenizer_is_a_plain_clip_tokenizer_that_records_the_cleaning(tmp_path):
    from transformers import AutoTokenizer

    clip_tokenizer().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "CLIPTokenizer" and config["text_cleaning"] == "open_clip"
    assert type(AutoTokenizer.from_pretrained(str(tmp_path))).__name__ == "CLIPTokenizer"


def test_a_saved_and_reloaded_open_clip_vit_keeps_the_cleaning(tmp_path):
    """An OpenCLIP ViT saved by ovdet (converted to the transformers layout) and loaded again still cleans
    its texts: the reloaded tokenizer gives open_clip's ids, not transformers' plain ones."""
    from test_open_clip_vit import CONFIGS, save_open_clip_vit

    from ovdet.models.detector import Detector

    folder = save_open_clip_vit(tmp_path / "clip", CONFIGS["openai"])
    detector = Detector.from_clip(str(folder), image_size=64)
    detector.save_pretrained(tmp_path / "det")
    reloaded = Detector.from_pretrained(tmp_path / "det")
    tokenizer = reloaded.text_encoder.tower.tokenizer
    assert tokenizer(TRICKY)["input_ids"] == open_clip_ids(TRICKY)
    with torch.no_grad():
        assert torch.allclose(reloaded.text_encoder.tower(TRICKY), detector.text_encoder.tower(TRICKY), atol=1e-6)

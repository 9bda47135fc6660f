"""Whatever text users type: a correct result, a warning when it is cut, or one clear error."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ovdet.errors import OvdetWarning
from ovdet.models.detector import Detector
from ovdet.models.text_encoder import MAX_QUERY_CHARS, validate_queries
from ovdet.text.tokenizer import clip_tokenizer, token_count, truncated_texts

IMAGE = np.full((24, 32, 3), 128, np.uint8)


@pytest.fixture(scope="module")
def detector(tiny_clip_dir):
    return Detector.from_clip(str(tiny_clip_dir), image_size=32)


@pytest.mark.parametrize(
    "queries, message",
    [
        ([], "query list is empty"),
        ([""], "non-empty strings"),
        (["cat", "   "], "non-empty strings"),
        (["\t\n"], "non-empty strings"),
        (["cat", None], "non-empty strings"),
        (["cat", 3], "non-empty strings"),
        (["cat", "dog", "cat"], r"'cat' is given twice \(positions 0 and 2\)"),
        (["cat", " cat "], "given twice"),  # the same query once stripped
        (["x" * (MAX_QUERY_CHARS + 1)], "characters long"),
    ],
)
def test_bad_query_lists_are_one_clear_error(detector, queries, message):
    with pytest.raises(ValueError, match=message):
        validate_queries(queries)
    with pytest.raises(ValueError, match=message):
        detector.detect(IMAGE, queries)


def test_case_variants_are_distinct_and_labels_follow_positions(detector):
    assert validate_queries(["Cat", "cat", " dog "]) == ["Cat", "cat", "dog"]
    dets = detector.detect(IMAGE, ["Cat", "cat", "dog"], threshold=0.0, nms=None, max_detections=200)[0]
    assert {(d.label, d.query) for d in dets} <= {(0, "Cat"), (1, "cat"), (2, "dog")}


def test_non_ascii_and_emoji_queries(detector):
    queries = ["寿司", "café au lait", "🐶", "🐱", "🐶 dog", "قطة", "Ünïcödé ✓"]
    embeds = detector.encode_queries(queries)
    assert embeds.shape[0] == len(queries) and torch.isfinite(embeds).all()
    assert not torch.allclose(embeds[2], embeds[3])  # two emoji are two different queries
    dets = detector.detect(IMAGE, queries, threshold=0.0)[0]
    assert dets and all(d.query == queries[d.label] for d in dets)


def test_ten_thousand_queries_are_encoded_in_batches(detector):
    queries = [f"object number {i}" for i in range(10_000)]
    encoder = detector.text_encoder
    sizes: list[int] = []
    hook = encoder.tower.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    try:
        dets = detector.detect(IMAGE, queries, threshold=0.0, max_detections=20)[0]
    finally:
        hook.remove()
    assert sum(sizes) == 10_000 and max(sizes) <= encoder.batch_size  # the tower never sees more than a batch
    assert len(sizes) == math.ceil(10_000 / encoder.batch_size)
    assert len(dets) == 20 and all(d.query == queries[d.label] for d in dets)


def _text_of_tokens(n: int) -> str:
    """A text that CLIP's BPE splits into exactly n tokens (plus start and end)."""
    text = " ".join(["dog"] * n)
    assert token_count(text) == n + 2
    return text


def test_query_longer_than_the_context_is_cut_with_one_warning(detector):
    context = detector.text_encoder.tower.context_length  # 77 for CLIP
    fits_alone = _text_of_tokens(context - 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OvdetWarning)
        warnings.filterwarnings("ignore", "UNTRAINED", OvdetWarning)  # the untrained head's once-per-detector warning
        detector.detect(IMAGE, [fits_alone], threshold=0.0)  # exactly fills the context: no warning
    with pytest.warns(OvdetWarning, match=rf"longer than the text tower's context of {context} tokens"):
        res = detector.detect(IMAGE, [fits_alone], threshold=0.0, templates="photo")  # "a photo of a {}." overflows
    assert res[0]
    long = _text_of_tokens(300)
    with pytest.warns(OvdetWarning, match="cut to fit") as record:
        detector.detect(IMAGE, [long, "cat"], threshold=0.0)
    assert len([w for w in record if issubclass(w.category, OvdetWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", OvdetWarning)
        detector.detect(IMAGE, [long, "cat"], threshold=0.0)  # cached now: warned once per text, not per image


def test_token_count_equals_the_tokenizers_own():
    tokenizer = clip_tokenizer()
    for text in ["a photo of a dog.", "🐶 dog", "寿司", "café au lait", "the   red\tumbrella", "x" * 50]:
        assert token_count(text) == len(tokenizer(text)["input_ids"]), text


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=60))
def test_truncation_check_misses_no_long_text(text):
    # The byte pre-filter that skips tokenising short texts is sound: a token spans at least one UTF-8 byte.
    assert token_count(text) <= len(text.lower().encode("utf-8")) + 2
    assert truncated_texts([text], context_length=12) == ([text] if token_count(text) > 12 else [])

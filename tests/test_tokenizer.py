import open_clip

from ovdet.text.tokenizer import clip_tokenizer, clip_vocab_and_merges


def test_vocabulary_is_openai_clip_size():
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == 49408
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407


def test_ids_equal_open_clip_tokenizer():
    texts = ["a photo of a red umbrella.", "Forklift!", "the dog on the left", "two small striped hexagons"]
    ours = clip_tokenizer()(texts)["input_ids"]
    ref = open_clip.tokenizer.tokenize(texts)
    for ids, row in zip(ours, ref):
        assert ids == row[: len(ids)].tolist()
        assert ids[0] == 49406 and ids[-1] == 49407


def test_each_clip_tokenizer_is_its_own():
    """A tokenizer is mutable: `model_max_length`, and the padding and truncation its Rust backend keeps from
    its last call (which `save_pretrained` writes into tokenizer.json). A shared instance let one user's
    settings reach the next: an OWL test's processor padded to 77 after a detector had run."""
    from ovdet.text.tokenizer import clip_tokenizer

    first = clip_tokenizer()
    first(["a photo of a star"], padding="max_length", max_length=77, truncation=True)
    first.model_max_length = 16
    second = clip_tokenizer()
    assert second is not first and second.model_max_length == 77
    assert second._tokenizer.padding is None and second._tokenizer.truncation is None
    assert second("a photo of a star")["input_ids"] == first("a photo of a star")["input_ids"]

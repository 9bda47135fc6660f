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

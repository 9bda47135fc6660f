"""A vocabulary's embeddings on disk equal live encoding, skip the text tower, and belong to one model only."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ovdet.cli.main import main
from ovdet.models.detector import Detector
from ovdet.text.vocab_cache import COCO_NAMES, read_vocab_cache, resolve_vocabulary

NAMES = ["red umbrella", "forklift", "cat", "traffic light"]
TEMPLATES = ["a photo of a {}.", "{}"]


@pytest.fixture(scope="module")
def other_clip_dir(tmp_path_factory):
    from tiny_clip import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("other_clip"), seed=1)


def test_round_trip_equals_live_encoding_without_running_the_tower(tiny_clip_dir, tmp_path):
    writer = Detector.from_clip(str(tiny_clip_dir), image_size=64)
    cache = writer.text_encoder.save_vocab(tmp_path / "v.safetensors", NAMES, TEMPLATES)
    assert cache.embeds.shape == (2, 4, writer.text_encoder.embed_dim)
    reader = Detector.from_clip(str(tiny_clip_dir), image_size=64)
    assert reader.load_vocab(tmp_path / "v.safetensors") == NAMES
    for reduce in (True, False):
        cached = reader.encode_queries(NAMES, TEMPLATES, reduce=reduce)
        live = writer.encode_queries(NAMES, TEMPLATES, reduce=reduce)
        torch.testing.assert_close(cached, live, atol=0, rtol=0)
    assert reader.text_encoder.tower_calls == 0
    reader.encode_queries(["a name not in the file"], TEMPLATES)  # still works, encoded live
    assert reader.text_encoder.tower_calls == 1


def test_a_cache_from_another_model_is_refused(tiny_clip_dir, other_clip_dir, tmp_path):
    Detector.from_clip(str(tiny_clip_dir), image_size=64).text_encoder.save_vocab(tmp_path / "v.safetensors", NAMES)
    other = Detector.from_clip(str(other_clip_dir), image_size=64)
    with pytest.raises(ValueError, match="was made with model .* re-run `ovdet embed-vocab"):
        other.load_vocab(tmp_path / "v.safetensors")


def test_bad_files_and_vocabularies_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        read_vocab_cache(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a vocabulary cache"):
        read_vocab_cache(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="lvis_v1_val.json"):
        resolve_vocabulary("lvis")
    assert resolve_vocabulary("coco") == list(COCO_NAMES) and len(COCO_NAMES) == 80
    (tmp_path / "cats.json").write_text(json.dumps({"categories": [{"id": 3, "name": "aerosol_can"}, {"id": 5, "name": "zebra"}]}))
    assert resolve_vocabulary(str(tmp_path / "cats.json")) == ["aerosol_can", "zebra"]
    (tmp_path / "names.txt").write_text("cat\n\n dog \n")
    assert resolve_vocabulary(str(tmp_path / "names.txt")) == ["cat", "dog"]


def test_cli_embed_vocab_then_detect_with_the_cache(tiny_clip_dir, other_clip_dir, tmp_path, capsys):
    (tmp_path / "names.txt").write_text("\n".join(NAMES))
    cache = tmp_path / "vocab.safetensors"
    assert main(["embed-vocab", "--model", str(tiny_clip_dir), "--vocab", str(tmp_path / "names.txt"),
                 "--templates", "clip7", "--out", str(cache)]) == 0  # fmt: skip
    assert read_vocab_cache(cache).names == NAMES and len(read_vocab_cache(cache).templates) == 7
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "im.png")
    out = tmp_path / "dets.json"
    args = ["detect", str(tmp_path / "im.png"), "--vocab-cache", str(cache), "--templates", "clip7",
            "--threshold", "0", "--precision", "fp32", "--out", str(out)]  # fmt: skip
    assert main(["detect", "--model", str(tiny_clip_dir), *args[1:]]) == 0
    queries = {d["query"] for d in json.loads(out.read_text())[0]["detections"]}
    assert queries and queries <= set(NAMES)  # no -q: the cache's names are the vocabulary
    capsys.readouterr()
    assert main(["detect", "--model", str(other_clip_dir), *args[1:]]) == 2
    assert "was made with model" in capsys.readouterr().err

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


def _rewrite(path, meta=None, embeds=None):
    """The cache at `path` with some metadata or the embeddings changed, as an edit or a bad copy would."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        old_meta, old_embeds = f.metadata(), f.get_tensor("embeds")
    new_meta = {k: v for k, v in {**old_meta, **(meta or {})}.items() if v is not None}
    save_file({"embeds": old_embeds if embeds is None else embeds}, str(path), metadata=new_meta)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(meta={"names": json.dumps(NAMES + ["zebra"])}), r"embeddings \[1, 4, \d+\] .* for 1 templates x 5 names"),
        (dict(meta={"names": json.dumps(NAMES[:2])}), r"names and embeddings do not belong together"),
        (dict(meta={"names": "cat, dog"}), r"has no valid 'names' list"),
        (dict(meta={"names": None}), r"has no valid 'names' list"),
        (dict(meta={"templates": json.dumps([3])}), r"has no valid 'templates' list"),
        (dict(meta={"fingerprint": None}), r"has no text-tower fingerprint"),
        (dict(meta={"names": json.dumps(["cat", "dog", "cat", "forklift"])}),
         r"lists the names \['cat'\] more than once"),
        (dict(embeds=torch.full((1, 4, 8), float("nan"))), r"NaN or infinite"),
        (dict(embeds=torch.zeros(4, 8)), r"embeddings \[4, 8\]"),
    ],
)
def test_an_edited_or_corrupt_cache_is_one_line(tiny_clip_dir, tmp_path, capsys, change, message):
    import re

    cache = tmp_path / "vocab.safetensors"
    Detector.from_clip(str(tiny_clip_dir), image_size=64).text_encoder.save_vocab(cache, NAMES)
    _rewrite(cache, **change)
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "im.png")
    code = main(["detect", str(tmp_path / "im.png"), "--model", str(tiny_clip_dir), "--vocab-cache", str(cache),
                 "--precision", "fp32"])  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(err) == 1 and str(cache) in err[0] and re.search(message, err[0]), err


def test_a_cache_of_another_width_is_refused_even_with_this_fingerprint(tiny_clip_dir, tmp_path):
    det = Detector.from_clip(str(tiny_clip_dir), image_size=64)
    cache = tmp_path / "vocab.safetensors"
    det.text_encoder.save_vocab(cache, NAMES)
    _rewrite(cache, embeds=torch.nn.functional.normalize(torch.randn(1, 4, det.text_encoder.embed_dim + 8), dim=-1))
    with pytest.raises(ValueError, match=rf"holds {det.text_encoder.embed_dim + 8}-d embeddings but this text tower"):
        det.load_vocab(cache)


def test_embed_vocab_writes_atomically_and_never_over_another_kind_of_file(tiny_clip_dir, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"a photo")
    assert main(["embed-vocab", "--model", str(tiny_clip_dir), "--vocab", "coco", "--out", str(photo)]) == 2
    assert photo.read_bytes() == b"a photo" and "exists and is not a .safetensors file" in capsys.readouterr().err
    assert main(["embed-vocab", "--model", str(tiny_clip_dir), "--vocab", "coco", "--out",
                 str(tmp_path / "v.safetensors")]) == 0  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png", "v.safetensors"]  # no temp file left


def test_embed_vocab_never_replaces_a_models_weights(tmp_path, capsys):
    """M13: `--out M/model.safetensors` named a model's weights: refused in one line before the model load
    (the model named here does not exist), the weights untouched; even a marked safetensors that is not a
    vocabulary cache is refused; --overwrite is the way to replace it anyway."""
    from safetensors.torch import save_file

    from ovdet import file_mark

    weights = tmp_path / "M" / "model.safetensors"
    weights.parent.mkdir()
    save_file({"w": torch.ones(3)}, str(weights))
    marked_weights = tmp_path / "M" / "marked.safetensors"
    save_file({"w": torch.ones(3)}, str(marked_weights), metadata={"written_by": file_mark.MARK_VALUE})
    for target, message in ((weights, "exists and was not written by ovdet"), (marked_weights, "exists and is not a vocabulary cache")):
        before = target.read_bytes()
        code = main(["embed-vocab", "--model", str(tmp_path / "no-such-model"), "--vocab", "coco", "--out", str(target)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and f"--out '{target}' {message}" in err[0] and "--overwrite" in err[0], err
        assert target.read_bytes() == before


def test_embed_vocab_marks_its_file_and_replaces_only_its_own(tiny_clip_dir, tmp_path):
    from ovdet import file_mark

    cache = tmp_path / "v.safetensors"
    args = ["embed-vocab", "--model", str(tiny_clip_dir), "--vocab", "coco", "--out", str(cache)]
    assert main(args) == 0 and file_mark.is_ours(cache)
    assert main(args) == 0  # its own file: replaced
    cache.write_bytes(b"someone else's")
    assert main(args) == 2 and cache.read_bytes() == b"someone else's"
    assert main(args + ["--overwrite"]) == 0 and read_vocab_cache(cache).names == list(COCO_NAMES)


def test_embed_vocab_checks_its_options_before_loading_the_model(tmp_path, capsys):
    missing = str(tmp_path / "no-such-model")
    for bad, message in ((["--vocab", "nope.txt"], "neither 'coco' nor"), (["--templates", "nope"], "nope"),
                         (["--device", "gpu7"], "--device 'gpu7'")):
        argv = ["embed-vocab", "--model", missing, "--vocab", "coco", "--out", str(tmp_path / "v.safetensors"), *bad]
        err = (main(argv), capsys.readouterr().err)
        assert err[0] == 2 and message in err[1] and "no-such-model" not in err[1], err

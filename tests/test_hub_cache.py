"""A hub id in the local Hugging Face cache loads as its snapshot folder does, for every family and command.

The cache is built by hand with huggingface_hub's exact layout (`hub/models--org--name/` holding
`blobs/<sha256>`, `snapshots/<commit>/<file>` as relative links into blobs, and `refs/main` naming
the commit), under an HF_HOME set for the test only; nothing is downloaded.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_owl import save_tiny_owl
from test_siglip_tower import save_tiny_siglip

from ovdet.cli.main import main
from ovdet.errors import ModelNotAvailableError
from ovdet.models.detector import Detector
from ovdet.towers.hub_cache import resolve_model
from ovdet.towers.loader import load_clip

OWL_ID = "google/owlv2-base-patch16-ensemble"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_repo(hf_home: Path, repo_id: str, folder: Path) -> Path:
    """Put `folder` into a hub cache under `hf_home` as huggingface_hub lays it out; returns the snapshot."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tiny_clip_dir):
    """An HF_HOME holding a tiny OWLv2 detector, a CLIP, a SigLIP and an ovdet model folder, by id."""
    root = tmp_path_factory.mktemp("hub")
    sources = root / "sources"
    save_tiny_owl(sources / "owl", "owlv2")
    save_tiny_siglip(sources / "siglip")
    Detector.from_clip(str(tiny_clip_dir), image_size=32).save_pretrained(sources / "ovdet")
    home = root / "hf_home"
    snapshots = {
        OWL_ID: cache_repo(home, OWL_ID, sources / "owl"),
        "openai/clip-tiny": cache_repo(home, "openai/clip-tiny", tiny_clip_dir),
        "google/siglip-tiny": cache_repo(home, "google/siglip-tiny", sources / "siglip"),
        "someone/ovdet-tiny": cache_repo(home, "someone/ovdet-tiny", sources / "ovdet"),
    }
    assert all(p.is_symlink() for s in snapshots.values() for p in s.rglob("*") if p.is_file())
    return home, snapshots


@pytest.fixture()
def hf_home(hub, monkeypatch):
    home, snapshots = hub
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("OVDET_ALLOW_DOWNLOAD", raising=False)
    return snapshots


def test_an_id_resolves_to_the_snapshot_refs_main_names(hf_home):
    source = resolve_model(OWL_ID)
    assert source.folder == hf_home[OWL_ID] and source.reference == OWL_ID


@pytest.mark.parametrize("repo_id", [OWL_ID, "openai/clip-tiny", "google/siglip-tiny", "someone/ovdet-tiny"])
def test_from_pretrained_by_id_equals_the_snapshot_folder(hf_home, repo_id):
    loaded = []
    for name in (repo_id, hf_home[repo_id]):
        torch.manual_seed(0)  # a bare tower gets a fresh random head: the same one both times
        loaded.append(Detector.from_pretrained(name))
    by_id, by_path = loaded
    assert by_id.untrained == by_path.untrained and by_id.settings.box_bias == by_path.settings.box_bias
    if repo_id == OWL_ID:  # recognised as OWL's detector, not a bare tower with unexpected box_head keys
        assert not by_id.untrained and by_id.settings.box_bias == "corner"
    size = by_id.settings.image_size
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    a, b = by_id.predict(pixels, ["a cat", "a dog"]), by_path.predict(pixels, ["a cat", "a dog"])
    assert torch.allclose(a["logits"], b["logits"], rtol=1e-5, atol=1e-5)
    assert torch.allclose(a["pred_boxes"], b["pred_boxes"], atol=1e-6)


def test_load_clip_by_id_keeps_the_id_as_its_reference(hf_home):
    loaded = load_clip("openai/clip-tiny")
    assert loaded.reference == "openai/clip-tiny" and loaded.format == "hf"
    again = load_clip(hf_home["openai/clip-tiny"])
    texts = ["a photo of a cat"]
    assert torch.allclose(loaded.text_tower(texts), again.text_tower(texts), atol=1e-6)


def test_cli_detect_by_id_equals_the_snapshot_path(hf_home, tmp_path):
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 70, 3), dtype=np.uint8)).save(image)
    results = []
    for name, model in (("id", OWL_ID), ("path", str(hf_home[OWL_ID]))):
        out = tmp_path / f"{name}.json"
        assert main(["detect", str(image), "-q", "cat", "--model", model, "--threshold", "0", "--out", str(out),
                     "--quiet", "--postprocess", "hf"]) == 0
        records = json.loads(out.read_text())
        assert records[0]["untrained"] is False
        results.append(records[0]["detections"])
    by_id, by_path = results
    assert len(by_id) == len(by_path) > 0
    for a, b in zip(by_id, by_path):
        assert a["label"] == b["label"] and abs(a["score"] - b["score"]) < 1e-5
        assert np.allclose(a["box"], b["box"], atol=1e-3)


def test_an_id_not_in_the_cache_is_one_line_naming_it_and_the_way_out(hf_home, tmp_path, capsys):
    with pytest.raises(ModelNotAvailableError, match=r"'google/owlv2-large' is not available offline.*--model DIR"):
        Detector.from_pretrained("google/owlv2-large")
    image = tmp_path / "photo.png"
    Image.new("RGB", (16, 16)).save(image)
    assert main(["detect", str(image), "-q", "cat", "--model", "google/owlv2-large"]) == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert len(lines) == 1 and "google/owlv2-large" in lines[0] and "local cache" in lines[0]

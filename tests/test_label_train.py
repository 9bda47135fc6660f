"""conf/experiment/finetune_labels.yaml as its header shows it: a ShapeWorld set labelled by the embedded
model (`--model` left out) fine-tunes that model with `ovdet train` (here one fast_dev_run batch)."""

import json

import pytest

from ovdet.cli.main import main


@pytest.mark.slow  # ~35 s on 2 shared cores: the embedded model labels, then trains one batch
def test_ovdet_train_fine_tunes_on_what_ovdet_label_wrote(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["shapeworld", "--out", "data/sw_unlabelled", "--num-images", "4", "--seed", "7", "--quiet"]) == 0
    assert main(["label", "data/sw_unlabelled/images", "-q", "circle", "-q", "square", "-q", "triangle",
                 "--format", "coco", "--out", "data/sw_labels", "--quiet"]) == 0
    labels = json.loads((tmp_path / "data/sw_labels/instances.json").read_text())
    assert labels["annotations"] and labels["info"]["images_root"] == str(tmp_path / "data/sw_unlabelled/images")

    code = main(["train", "experiment=finetune_labels", "labels_dir=data/sw_labels",
                 "images_dir=data/sw_unlabelled/images", "debug=fast_dev_run", "data.batch_size=2",
                 "hydra.run.dir=run"])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    config = json.loads((tmp_path / "run/detector/config.json").read_text())
    recipe = config["info"]["recipe"]
    assert recipe["data"]["train_json"] == str(tmp_path / "data/sw_labels/instances.json")
    assert recipe["model"]["_target_"].endswith("Detector.from_pretrained")  # fine-tuned, not a fresh head


@pytest.mark.parametrize("missing", ["labels_dir", "images_dir"])
def test_the_experiment_names_what_it_needs(missing, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    given = [f"{key}=x" for key in ("labels_dir", "images_dir") if key != missing]
    assert main(["train", "experiment=finetune_labels", *given, "hydra.run.dir=run"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"Missing mandatory value: {missing}" in lines[0], lines

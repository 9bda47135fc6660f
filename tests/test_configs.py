import sys
from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from synthetic_coco import write_synthetic_coco

from ovdet.cli.main import build_parser, main
from ovdet.cli.train import config_dir
from ovdet.data.datamodule import CocoDataModule
from ovdet.evaluation.splits import load_split
from ovdet.models.detector import Detector
from ovdet.training import DetectionModule, ExportDetector
from ovdet.training.run import instantiate_group

CONF = Path(__file__).resolve().parents[1] / "conf"
# Detection training experiments; conf/experiment/ also holds the dense-distillation stage (its own test
# below) and other entry points' files (shapeworld_clip).
EXPERIMENTS = ["smoke", "shapeworld_ovd", "ovcoco_clip_b32", "ovcoco_clip_b16", "lvis_clip_b16"]
STAGES = ["dense_distill"]


def test_every_experiment_file_is_tested():
    # shapeworld_clip: tools/pretrain_clip.py's, tested there; finetune_labels loads a saved detector folder
    # (model=owl), so tests/test_label_train.py runs it on `ovdet label` output
    tested = {*EXPERIMENTS, *STAGES, "shapeworld_clip", "finetune_labels"}
    assert set(options("experiment")) == tested


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    return write_synthetic_coco(folder, num_images=4, seed=0), folder / "images"


def compose_train(clip, out, data, *overrides):
    json_path, images = data
    # The tiny CLIP is a ViT: no crop encoder and a fixed grid, so ShapeWorld's ResNet options are off.
    tiny = [f"model.clip={clip}", "model.image_size=64", "++model.rescore=null", "++model.region_scoring=null",
            "++model.feature_stride=null",
            f"paths.output_dir={out}",
            f"data.train_json={json_path}", f"data.train_images={images}",
            f"data.val_json={json_path}", f"data.val_images={images}"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("train", overrides=[*overrides, *tiny])


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("option", options("model"))
def test_every_model_config_builds_a_detector(option, tiny_clip_dir, data, tmp_path):
    if option == "owl":  # built from an OWL-ViT folder (model.path), not from a CLIP
        from test_owl import save_tiny_owl

        save_tiny_owl(tmp_path / "owl", "owlv2")
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("train", overrides=["model=owl", f"model.path={tmp_path / 'owl'}"])
        assert isinstance(instantiate(cfg.model), Detector)
        return
    cfg = compose_train(tiny_clip_dir, tmp_path, data, f"model={option}")
    detector = instantiate(cfg.model)
    assert isinstance(detector, Detector) and detector.image_size == 64 and detector.untrained


@pytest.mark.parametrize("option", options("data"))
def test_every_data_config_builds_a_datamodule(option, tiny_clip_dir, data, tmp_path):
    cfg = compose_train(tiny_clip_dir, tmp_path, data, f"data={option}")
    dm = instantiate(cfg.data, image_size=64)
    assert isinstance(dm, CocoDataModule) and dm.image_size == 64 and dm.batch_size >= 1


@pytest.mark.parametrize("option", options("trainer"))
def test_every_trainer_config_builds_a_trainer(option, tiny_clip_dir, data, tmp_path):
    cfg = compose_train(tiny_clip_dir, tmp_path, data, f"trainer={option}", "trainer.accelerator=cpu")
    trainer = instantiate(cfg.trainer)
    assert isinstance(trainer, L.Trainer)
    if option == "ddp":
        assert type(trainer.strategy).__name__ == "DDPStrategy" and trainer.num_devices == 2


@pytest.mark.parametrize("group", ["callbacks", "logger"])
def test_every_callbacks_and_logger_config_builds(group, tiny_clip_dir, data, tmp_path):
    for option in options(group):
        cfg = compose_train(tiny_clip_dir, tmp_path, data, f"{group}={option}")
        built = instantiate_group(cfg.get(group))
        assert (len(built) == 0) == (option == "none"), option
    cfg = compose_train(tiny_clip_dir, tmp_path, data, "callbacks=default")
    export = [c for c in instantiate_group(cfg.callbacks) if isinstance(c, ExportDetector)]
    assert export and export[0].dirpath == tmp_path / "detector"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(experiment, tiny_clip_dir, data, tmp_path):
    cfg = compose_train(tiny_clip_dir, tmp_path, data, f"experiment={experiment}", "trainer.accelerator=cpu")
    assert cfg.name == experiment
    detector = instantiate(cfg.model)
    assert isinstance(instantiate(cfg.data, image_size=detector.image_size), CocoDataModule)
    module = instantiate(cfg.module, detector=detector)
    assert isinstance(module, DetectionModule) and isinstance(instantiate(cfg.trainer), L.Trainer)


def test_the_dense_distillation_stage_composes_and_instantiates(tiny_clip_dir, data, tmp_path):
    from ovdet.distill.image_folder_data import ImageFolderDataModule
    from ovdet.distill.module import DenseDistillModule
    from ovdet.distill.stage import DistillTower

    _, images = data
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=dense_distill", f"model.clip={tiny_clip_dir}",
                                          "model.image_size=64", f"data.images={images}", f"paths.output_dir={tmp_path}",
                                          "module.trainable_layers=1"])
    tower = instantiate(cfg.model)
    assert isinstance(tower, DistillTower) and tower.image_size == 64
    assert isinstance(instantiate(cfg.data, image_size=tower.image_size), ImageFolderDataModule)
    module = instantiate(cfg.module, detector=tower)
    assert isinstance(module, DenseDistillModule) and module.context == 0.2 and module.proposals is None
    assert isinstance(instantiate(cfg.trainer), L.Trainer)


@pytest.mark.parametrize("debug", options("debug"))
def test_debug_configs_compose_onto_an_experiment(debug, tiny_clip_dir, data, tmp_path):
    cfg = compose_train(tiny_clip_dir, tmp_path, data, "experiment=ovcoco_clip_b32", f"debug={debug}")
    assert cfg.data.num_workers == 0
    if debug == "overfit":
        assert cfg.data.augmentation is None and cfg.data.val_json == cfg.data.train_json


def test_split_names_live_in_the_split_file_not_in_the_configs(tiny_clip_dir, data, tmp_path):
    cfg = compose_train(tiny_clip_dir, tmp_path, data, "experiment=ovcoco_clip_b32")
    assert cfg.data.split == "ovcoco"
    split = load_split(cfg.data.split)
    assert len(split.novel) == 17 and len(split.base) == 48
    text = "\n".join(p.read_text() for p in CONF.rglob("*.yaml") if "shapeworld" not in p.parts)
    assert not any(name in text for name in ("umbrella", "skateboard", "keyboard"))


def test_config_dir_defaults_to_the_repository_and_follows_ovdet_conf(monkeypatch, tmp_path):
    monkeypatch.delenv("OVDET_CONF", raising=False)
    assert config_dir() == CONF.resolve()
    monkeypatch.setenv("OVDET_CONF", str(tmp_path))
    with pytest.raises(ValueError, match="OVDET_CONF"):
        config_dir()
    monkeypatch.setenv("OVDET_CONF", str(CONF))
    assert config_dir() == CONF.resolve()


def test_cli_registers_train_and_export_ckpt_with_hydra_usage():
    parser = build_parser()
    choices = parser._subparsers._group_actions[0].choices
    assert {"train", "export-ckpt"} <= set(choices)
    assert "experiment=" in choices["train"].format_help() and "experiment=" in parser.format_help()


def test_ovdet_train_help_and_errors_in_process(capsys):
    argv = list(sys.argv)
    assert main(["train", "--help"]) == 0
    assert "ovdet train experiment=shapeworld_ovd" in capsys.readouterr().out
    assert main(["train", "no_such_key=1"]) != 0  # Hydra refuses an unknown key
    assert sys.argv == argv

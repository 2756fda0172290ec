"""Every config composes; task/experiment selection behaves as documented."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import MissingConfigException

from tests.helpers import ROOT

CONF = ROOT / "conf"
TASKS = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
INFER_TASKS = sorted(p.stem for p in (CONF / "task" / "infer").glob("*.yaml"))


def _compose(config_dir: Path, name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=True)


def test_the_expected_tasks_exist():
    assert "classification" in TASKS
    assert len(TASKS) >= 1


@pytest.mark.parametrize("task", TASKS)
def test_every_task_config_composes(task):
    cfg = _compose(CONF, "train", [f"task={task}"])
    assert cfg.task.name == task
    for key in ("data", "model", "trainer", "callbacks", "paths"):
        assert key in cfg, f"task={task} lacks a {key} config"
    assert cfg.data._target_ and cfg.model._target_
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment):
    cfg = _compose(CONF, "train", [f"experiment={experiment}"])
    assert cfg.task.name in TASKS


@pytest.mark.parametrize("task", INFER_TASKS)
def test_every_infer_config_composes(task):
    cfg = _compose(CONF, "infer", [f"task={task}", "output_dir=/tmp/x"])
    assert cfg.task.name == task and cfg.task.runner


@pytest.mark.parametrize("group,option", [("trainer", "cpu"), ("trainer", "gpu"), ("trainer", "ddp"),
                                          ("trainer", "debug"), ("logger", "wandb"),
                                          ("logger", "csv"), ("logger", "none")])
def test_trainer_and_logger_options_compose(group, option):
    cfg = _compose(CONF, "train", [f"{group}={option}"])
    assert group in cfg


def test_unknown_task_lists_the_choices():
    with pytest.raises(MissingConfigException) as err:
        _compose(CONF, "train", ["task=no_such_task"])
    assert "classification" in str(err.value.options) or "classification" in str(err.value)


def test_wandb_is_offline_by_default():
    cfg = _compose(CONF, "train", [])
    assert cfg.logger._target_.endswith("WandbLogger") and cfg.logger.offline is True


def test_classification_norm_choice_reaches_the_model():
    cfg = _compose(CONF, "train", ["task=classification", "model.norm=group"])
    assert cfg.model.norm == "group"


def test_the_gan_monitor_follows_the_inception_weights_in_the_config(tmp_path):
    """No runner rewrites the config after config.yaml is written: the GAN's checkpoint monitor
    is chosen by the config itself (val/fid with local InceptionV3 weights, else val/fid_local)."""
    from omegaconf import OmegaConf

    from tests.hydra_configs import compose_train

    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"x")
    plain = compose_train(["task=gan"], tmp_path / "a")
    assert OmegaConf.select(plain, "task.monitor") == "val/fid_local"
    assert plain.callbacks.model_checkpoint.monitor == "val/fid_local"
    fid = compose_train(["task=gan", f"gan.metrics.inception_weights={weights}"], tmp_path / "b")
    assert fid.task.monitor == "val/fid" and fid.callbacks.model_checkpoint.monitor == "val/fid"

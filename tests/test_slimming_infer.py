"""infer.py task=slimming refuses bad requests with named errors before loading anything."""
import pytest
import torch
from omegaconf import OmegaConf

from normapps.platform.checkpoint import CheckpointError
from normapps.tasks.classification import ClassificationModule
from normapps.tasks.slimming.infer import run
from normapps.tasks.slimming.runner import save_module


def _cfg(**kw):
    return OmegaConf.create({"ckpt_path": None, "input": None, "image_size": None,
                             "batch_size": 8, **kw})


def test_missing_options_are_named(tmp_path):
    with pytest.raises(ValueError, match="ckpt_path"):
        run(_cfg(input=str(tmp_path)), device=torch.device("cpu"), output_dir=tmp_path)
    with pytest.raises(ValueError, match="input"):
        run(_cfg(ckpt_path="x.ckpt"), device=torch.device("cpu"), output_dir=tmp_path)
    with pytest.raises(ValueError, match="batch_size"):
        run(_cfg(ckpt_path="x.ckpt", input=str(tmp_path), batch_size=0),
            device=torch.device("cpu"), output_dir=tmp_path)


def test_missing_input_fails_before_loading(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        run(_cfg(ckpt_path=str(tmp_path / "absent.ckpt"), input=str(tmp_path / "nope")),
            device=torch.device("cpu"), output_dir=tmp_path)


def test_checkpoint_of_another_task_is_refused(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    path = save_module(ClassificationModule(arch="small_cnn", width=8), tmp_path / "cls.ckpt")
    with pytest.raises(CheckpointError, match="not 'slimming'"):
        run(_cfg(ckpt_path=str(path), input=str(tmp_path / "a.png")),
            device=torch.device("cpu"), output_dir=tmp_path)

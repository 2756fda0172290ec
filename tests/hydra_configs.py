"""Compose train.py's and infer.py's configs in-process, as the CLIs would see them (for tests
that probe many option values and cannot afford a process per value)."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict, read_write

from normapps.platform.resolvers import register_resolvers
from tests.helpers import ROOT

register_resolvers()


def compose_train(overrides: list[str], run_dir: Path) -> DictConfig:
    """train.py's config with ``hydra.run.dir=run_dir`` (the ``hydra`` node removed, as the task
    function gets it; ``${hydra:...}`` still resolves)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def compose_infer(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="infer", overrides=list(overrides))

"""Train any normapps task: ``python train.py task=<name> [overrides]``."""
import hydra
from omegaconf import DictConfig

from normapps.platform.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    from normapps.platform.runner import run_train

    run_train(cfg)


if __name__ == "__main__":
    main()

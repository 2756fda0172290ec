"""Run a task's inference: ``python infer.py task=<name> ckpt_path=<ckpt> output_dir=<dir> ...``."""
import hydra
from omegaconf import DictConfig

from normapps.platform.resolvers import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="infer")
def main(cfg: DictConfig) -> None:
    from normapps.platform.inference import run_infer

    run_infer(cfg)


if __name__ == "__main__":
    main()

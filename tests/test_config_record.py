"""The run's config.yaml is the config the run used: nothing changes the config after it is
written (the config is read-only from then on), and the GAN's checkpoint monitor comes from the
config itself."""
import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

import normapps.platform.runner as runner_mod
from tests.hydra_configs import compose_train

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def test_config_yaml_equals_the_config_the_run_used(tmp_path, monkeypatch):
    seen = {}
    real = runner_mod.fit_and_test

    def recording_runner(cfg, ctx):
        result = real(cfg, ctx)
        seen["after"] = OmegaConf.to_yaml(cfg, resolve=True)
        seen["readonly"] = OmegaConf.is_readonly(cfg)
        with pytest.raises(ReadonlyConfigError):
            cfg.trainer.max_epochs = 99
        return result

    monkeypatch.setattr(runner_mod, "fit_and_test", recording_runner)
    run = tmp_path / "run"
    cfg = compose_train(["task=classification", "trainer=debug", "logger=none", "model.width=4",
                         "data.batch_size=32"], run)
    runner_mod.run_train(cfg)
    assert seen["readonly"]
    assert (run / "config.yaml").read_text() == seen["after"]

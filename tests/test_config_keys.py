"""Renamed config keys: the old names still work for one release, with a deprecation message,
through the real CLIs; the code and the run's config.yaml see only the new names."""
import pytest
from omegaconf import OmegaConf

from normapps.platform.config_keys import DEPRECATED_KEYS, migrate_deprecated_keys
from normapps.platform.options import OptionError
from tests.helpers import run_cli
from tests.hydra_configs import compose_train

GAN_OLD = {"max_g_steps": "3", "n_dis": "2", "eval_every_g_steps": "1",
           "metrics.inception_weights": "null", "metrics.num_samples": "16",
           "metrics.local_cache": "null", "metrics.local_steps": "3"}


def test_every_old_gan_name_through_train_py_warns_and_is_checked_under_its_new_name(tmp_path):
    # Every old GAN name, and a trainer budget under one generator iteration: train.py stops in
    # its preflight (after moving the names: n_dis=2 makes an iteration 3 optimizer steps),
    # before any run is created. inception_weights=null is unset, so it moves silently.
    proc = run_cli("train.py", f"hydra.run.dir={tmp_path / 'run'}", "task=gan", "logger=none",
                   *(f"{k}={v}" for k, v in GAN_OLD.items()), "trainer.max_steps=2",
                   check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    for old, value in GAN_OLD.items():
        if value != "null":
            assert f"{old} is deprecated, use {DEPRECATED_KEYS[old]}" in out, old
    assert "trainer.max_steps=2 is less than one generator iteration (n_dis + 1 = 3" in out
    assert "set gan.max_g_steps (generator iterations) instead" in out
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_old_quant_mode_through_train_py(tmp_path):
    proc = run_cli("train.py", f"hydra.run.dir={tmp_path / 'run'}", "task=quantization", "logger=none",
                   "mode=int4", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "mode is deprecated, use quant.mode" in out
    assert "quant.mode must be one of ptq, qat, dfq, zeroq, got 'int4'" in out


def test_old_names_move_to_the_new_ones_and_disappear(tmp_path):
    cfg = compose_train(["task=gan", *(f"{k}={v}" for k, v in GAN_OLD.items())], tmp_path)
    assert sorted(migrate_deprecated_keys(cfg)) == sorted(k for k, v in GAN_OLD.items() if v != "null")
    assert cfg.gan.max_g_steps == 3 and cfg.gan.n_dis == 2 and cfg.gan.eval_every_g_steps == 1
    assert cfg.gan.metrics.num_samples == 16 and cfg.gan.metrics.local_steps == 3
    # What the model and the callbacks read follows the new names.
    assert cfg.model.n_dis == 2 and cfg.model.max_g_steps == 3 and cfg.model.num_eval_samples == 16
    for old in ("max_g_steps", "n_dis", "eval_every_g_steps", "metrics"):
        assert old not in cfg
    # Unset old names (the placeholders) leave the defaults alone.
    plain = compose_train(["task=gan"], tmp_path)
    assert migrate_deprecated_keys(plain) == [] and plain.gan.max_g_steps == 2000
    assert "max_g_steps" not in plain and "metrics" not in plain
    quant = compose_train(["task=quantization", "mode=dfq"], tmp_path)
    assert migrate_deprecated_keys(quant) == ["mode"] and quant.quant.mode == "dfq" and "mode" not in quant


def test_the_old_inception_weights_name_still_picks_the_fid_monitor(tmp_path):
    weights = tmp_path / "pt_inception.pth"
    weights.write_bytes(b"x")
    cfg = compose_train(["task=gan", f"metrics.inception_weights={weights}"], tmp_path / "run")
    migrate_deprecated_keys(cfg)
    assert cfg.gan.metrics.inception_weights == str(weights)
    assert cfg.task.monitor == "val/fid" and cfg.callbacks.model_checkpoint.monitor == "val/fid"


def test_old_and_new_name_with_different_values_are_refused(monkeypatch, tmp_path):
    import normapps.platform.config_keys as ck

    cfg = compose_train(["task=gan", "max_g_steps=5", "gan.max_g_steps=7"], tmp_path)
    monkeypatch.setattr(ck, "typed_overrides", lambda: {"max_g_steps": "5", "gan.max_g_steps": "7"})
    with pytest.raises(OptionError, match="max_g_steps=5 and gan.max_g_steps=7 were both given"):
        migrate_deprecated_keys(cfg)


def test_no_config_still_declares_an_old_name_outside_its_placeholder():
    """Experiments and the task files use the new names (the placeholders are null)."""
    from tests.helpers import ROOT

    for path in sorted((ROOT / "conf" / "experiment").glob("*.yaml")):
        declared = OmegaConf.to_container(OmegaConf.load(path))
        for old in DEPRECATED_KEYS:
            assert OmegaConf.select(OmegaConf.create(declared), old, default=None) is None, (path, old)


def test_domain_adaptation_flat_names_move_through_the_same_table(tmp_path):
    cfg = compose_train(["task=domain_adaptation", "adapt.mode=episodic", "adapt.dsbn_lr=0.1"], tmp_path)
    assert sorted(migrate_deprecated_keys(cfg)) == ["adapt.dsbn_lr", "adapt.mode"]
    assert cfg.adapt.tent.mode == "episodic" and cfg.adapt.dsbn.lr == 0.1
    assert "mode" not in cfg.adapt and "dsbn_lr" not in cfg.adapt and "extra_sources" not in cfg.adapt

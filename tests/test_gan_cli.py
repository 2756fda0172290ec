"""train.py / infer.py end to end for task=gan: 2 G steps, sampling, resume to 4 G steps."""
import json

import pytest
import torch
from omegaconf import OmegaConf

from normapps.platform.checkpoint import safe_load
from normapps.tasks.gan.runner import g_step_budget, trainer_overrides
from tests.helpers import infer, run_cli, train

ENV = {"OMP_NUM_THREADS": "1"}
TINY = ["task=gan", "trainer=debug", "logger=csv", "gan.n_dis=1", "model.g_arch=dcgan", "model.d_arch=dcgan",
        "model.g_width=8", "model.d_width=8", "model.z_dim=16", "data.batch_size=8", "data.num_eval_real=32",
        "gan.metrics.num_samples=16", "gan.metrics.local_steps=3", "gan.metrics.local_cache=null",
        "model.eval_batch_size=16", "model.recal_batches=2", "model.kid_subset_size=8", "model.grid_size=8",
        "model.conditional=true", "model.g_norm=cond_batch", "model.loss=wgan_gp", "gan.eval_every_g_steps=1"]


FEATURES = ["gan.g_spectral_norm=true", "gan.self_attention=true", "gan.attention_size=8", "gan.r1_gamma=0.1",
            "gan.diffaugment=[color,translation,cutout]", "gan.intra_fid=true", "gan.fid_stats=train",
            "gan.g_batch_size=12"]


def test_trainer_budget_counts_every_optimizer_step():
    o = trainer_overrides(max_g_steps=10, n_dis=5, eval_every_g_steps=4)
    assert o["max_steps"] == 60 and o["val_check_interval"] == 20 and o["max_epochs"] == -1


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("gan_run")
    # Every gan.* recipe option at once, through the config: SN + self-attention in G, R1,
    # DiffAugment, intra-class FID, FID against cached training statistics, G batch size.
    # max_g_steps: the deprecated name of gan.max_g_steps, still accepted.
    summary = train(run, *TINY, *FEATURES, f"gan.fid_stats_cache={run / 'fid_stats'}", "max_g_steps=2", env=ENV)
    return run, summary


def test_train_two_g_steps(first_run):
    run, summary = first_run
    assert summary["g_steps"] == 2 and summary["global_step"] == 4  # (n_dis + 1) per G step
    m = summary["metrics"]
    for key in ("val/fid_local", "val/kid_local", "val/is_local", "val/d_real", "val/d_fake", "val/sigma_max"):
        assert key in m, key
    assert any(k.startswith("val/sigma/") for k in m)
    assert 0.5 < m["val/sigma_max"] < 1.5  # spectral norm in D
    net = summary["fid_feature_net"]
    assert net["kind"] == "local" and len(net["sha256"]) == 64
    assert summary["fid_reference"]["kind"] == "train" and summary["fid_reference"]["num_images"] == 1797
    assert list((run / "fid_stats").glob("*.pt"))
    assert "val/intra_fid_local" in m
    assert summary["outputs"]["run_dir"] == str(run)
    assert list((run / "images").glob("val_samples_*.png"))
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_config_yaml_is_what_the_run_used(first_run):
    """config.yaml holds the new names (the old max_g_steps=2 moved to gan.max_g_steps), and
    the checkpoint monitor it records is the one the run's ModelCheckpoint used."""
    run, summary = first_run
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.gan.max_g_steps == 2 == saved.model.max_g_steps == summary["g_steps"]
    assert "max_g_steps" not in saved and "metrics" not in saved and "n_dis" not in saved
    assert saved.task.monitor == saved.callbacks.model_checkpoint.monitor == "val/fid_local"
    ckpt = safe_load(run / "checkpoints" / "last.ckpt")
    used = [state["monitor"] for key, state in ckpt["callbacks"].items() if key.startswith("ModelCheckpoint")]
    assert used == [saved.task.monitor]


def test_infer_samples_label_and_interpolation(first_run, tmp_path):
    run, _ = first_run
    out = tmp_path / "samples"
    infer(out, "task=gan", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "num_samples=5", "label=3",
          "interpolate=true", "interpolate_rows=2", "interpolate_steps=4", "seed=7", env=ENV)
    assert json.loads((out / "inference.json").read_text())["truncation"] is None
    result = json.loads((out / "inference.json").read_text())
    assert result["num_samples"] == 5 and result["label"] == 3 and result["generator"] == "ema"
    assert len(list((out / "samples").glob("sample_*.png"))) == 5
    assert (out / "grid.png").is_file() and (out / "interpolation.png").is_file()

    # Same seed, same samples; bad options are named (in-process: no extra subprocess).
    from normapps.tasks.gan.infer import run as run_infer

    cfg = OmegaConf.create({"ckpt_path": str(run / "checkpoints" / "last.ckpt"), "num_samples": 5, "label": 3,
                            "interpolate": False, "interpolate_rows": 2, "interpolate_steps": 4, "use_ema": True,
                            "batch_size": 4, "grid_nrow": 5, "seed": 7, "truncation": None})
    run_infer(cfg, device=torch.device("cpu"), output_dir=tmp_path / "again")
    from PIL import Image
    import numpy as np
    a = np.asarray(Image.open(out / "samples" / "sample_00004.png"))
    b = np.asarray(Image.open(tmp_path / "again" / "samples" / "sample_00004.png"))
    assert np.array_equal(a, b)
    cfg.label = 10
    with pytest.raises(ValueError, match="label must be in"):
        run_infer(cfg, device=torch.device("cpu"), output_dir=tmp_path / "bad")
    # The truncation trick: latents resampled into [-psi, psi]; a bad psi is refused before the
    # checkpoint is read.
    cfg.label, cfg.truncation = 3, 0.5
    result = run_infer(cfg, device=torch.device("cpu"), output_dir=tmp_path / "truncated")
    assert result["truncation"] == 0.5
    c = np.asarray(Image.open(tmp_path / "truncated" / "samples" / "sample_00004.png"))
    assert not np.array_equal(b, c)
    cfg.truncation, cfg.ckpt_path = 0.0, str(tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match="truncation"):
        run_infer(cfg, device=torch.device("cpu"), output_dir=tmp_path / "bad")


def test_resume_continues_g_step_counter(first_run, tmp_path):
    run, _ = first_run
    summary = train(tmp_path / "resumed", *TINY, *FEATURES, f"gan.fid_stats_cache={run / 'fid_stats'}",
                    "gan.max_g_steps=4", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", env=ENV)
    assert summary["fid_reference"]["cached"] is True  # the training statistics were computed once
    assert summary["g_steps"] == 4 and summary["global_step"] == 8
    ckpt = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert int(ckpt["state_dict"]["g_steps"]) == 4


def test_ddp_two_cpu_processes(tmp_path):
    """trainer=ddp through train.py: two gloo processes, manual optimization with
    n_dis, the G-step counter and the distributed metric states agree across ranks. Plain
    ``ddp`` (Lightning re-launches train.py per rank): ``ddp_spawn`` would pickle the model, and
    PyTorch cannot pickle parametrized (spectral-normalized) modules."""
    tiny = [o for o in TINY if not o.startswith(("logger=", "trainer="))]
    summary = train(tmp_path / "ddp", *tiny, "logger=none", "gan.max_g_steps=2", "trainer=ddp",
                    "trainer.accelerator=cpu", "trainer.devices=2", "+trainer.limit_val_batches=1", "+trainer.num_sanity_val_steps=0", env=ENV)
    assert summary["g_steps"] == 2 and summary["global_step"] == 4
    assert "val/fid_local" in summary["metrics"]
    # Each rank generates its own share of the fixed evaluation latents: after the metric
    # states are synced, every generated image counts once (metrics.num_samples=16), not twice.
    assert summary["metrics"]["val/num_fake"] == 16
    assert (tmp_path / "ddp" / "checkpoints" / "last.ckpt").is_file()
    assert "GLOBAL_RANK: 1" in (tmp_path / "ddp" / "train_ddp_process_1.log").read_text()


def test_explicit_trainer_max_steps_sets_the_g_step_budget(tmp_path):
    """``trainer.max_steps=N`` on the command line is honoured: N optimizer steps are
    N / (n_dis + 1) generator iterations (it used to be replaced by max_g_steps' 2000)."""
    summary = train(tmp_path / "run", *TINY, "trainer.max_steps=4", env=ENV, timeout=300)
    assert summary["g_steps"] == 2 and summary["global_step"] == 4
    assert summary["g_step_budget"] == {"max_g_steps": 2, "from": "trainer.max_steps=4"}


@pytest.mark.parametrize("explicit, msg", [
    ({"trainer.max_steps": 12, "gan.max_g_steps": 5}, "trainer.max_steps=12 .*max_g_steps=5"),
    ({"trainer.max_steps": 3}, "max_g_steps"),
    ({"trainer.val_check_interval": 10}, "eval_every_g_steps"),
    ({"trainer.check_val_every_n_epoch": 2}, "eval_every_g_steps"),
])
def test_trainer_overrides_that_cannot_be_honoured_are_refused(explicit, msg):
    with pytest.raises(ValueError, match=msg):
        g_step_budget(max_g_steps=int(explicit.get("gan.max_g_steps", 2000)), n_dis=5, explicit=explicit,
                      batches_per_epoch=lambda: 28)


def test_g_step_budget_from_epochs():
    # 3 epochs of 28 batches = 84 D steps = 16 G steps at n_dis 5.
    budget = g_step_budget(max_g_steps=2000, n_dis=5, explicit={"trainer.max_epochs": 3},
                           batches_per_epoch=lambda: 28)
    assert budget == {"max_g_steps": 16, "from": "trainer.max_epochs=3"}
    assert g_step_budget(max_g_steps=7, n_dis=5, explicit={}, batches_per_epoch=lambda: 28) == {
        "max_g_steps": 7, "from": "max_g_steps"}

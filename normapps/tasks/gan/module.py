"""LightningModule for GAN training: manual optimization, n_dis D steps per G step, its own
generator-step counter, linear lr decay, generator EMA, and evaluation (FID/KID/IS, D scores,
singular values of D, sample grid) at each validation."""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import torch
from torchvision.utils import make_grid

from normapps.norm import spectral_norm_estimates
from normapps.platform.logging import log_image
from normapps.platform.module import NormappsModule
from normapps.platform.options import OptionError, apply_checks
from normapps.tasks.gan.diffaugment import DiffAugment
from normapps.tasks.gan.discriminators import D_ARCHS, D_NORMS, build_discriminator
from normapps.tasks.gan.ema import (ema_update, make_ema, recalibrate_ema_bn, refresh_spectral_vectors,
                                    upgrade_state_dict)
from normapps.tasks.gan.generators import G_ARCHS, G_NORMS, build_generator
from normapps.tasks.gan.losses import LOSSES, check_loss, d_loss, g_loss, gradient_penalty, r1_penalty

# Power iterations that settle the EMA generator's spectral-norm vectors on its averaged
# weights before it is evaluated or sampled (one more runs after every EMA update).
EMA_SN_REFRESH_ITERATIONS = 10
# model.<key> set from gan.<key> (conf/model/gan.yaml): errors name the gan.* key users set.
GAN_RECIPE_KEYS = ("g_batch_size", "g_spectral_norm", "self_attention", "attention_size", "r1_gamma",
                   "diffaugment", "intra_fid", "fid_stats", "fid_stats_cache")
FID_STATS = ("train",)  # gan.fid_stats: null | train | <path to an .npz with mu, sigma>


def truncated_normal(n: int, dim: int, *, psi: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The truncation trick (Brock et al. 2019): N(0, 1) latents whose entries outside
    [-psi, psi] are resampled until they fall inside (not clipped)."""
    if not psi > 0:
        raise ValueError(f"truncation must be > 0 (the band [-psi, psi] latents are kept in), got {psi}")
    z = torch.randn(n, dim, generator=generator)
    for _ in range(10000):
        out = z.abs() > psi
        if not out.any():
            return z
        z[out] = torch.randn(int(out.sum()), generator=generator)
    raise RuntimeError(f"truncation={psi}: resampling did not converge")

log = logging.getLogger(__name__)


class GANModule(NormappsModule):
    task_name = "gan"

    def __init__(
        self,
        *,
        g_arch: str = "resnet",
        d_arch: str = "resnet",
        g_norm: str = "batch",
        d_norm: str = "spectral",
        conditional: bool = False,
        num_classes: int = 0,
        z_dim: int = 128,
        g_width: int = 256,
        d_width: int = 128,
        image_size: int = 32,
        channels: int = 3,
        loss: str = "hinge",
        gp_weight: float = 10.0,
        n_dis: int = 5,
        max_g_steps: int = 50000,
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas: tuple[float, float] | list[float] = (0.0, 0.9),
        lr_decay: str = "linear",
        grad_clip: float = 0.0,
        ema_decay: float = 0.999,
        ema_start: int = 0,
        use_ema: bool = True,
        num_eval_samples: int = 1000,
        eval_batch_size: int = 256,
        eval_seed: int = 1234,
        recal_batches: int = 10,
        grid_size: int = 64,
        inception_weights: str | None = None,
        local_feature_steps: int = 600,
        local_feature_cache: str | None = None,
        kid_subset_size: int = 1000,
        g_batch_size: int | None = None,
        g_spectral_norm: bool = False,
        self_attention: bool = False,
        attention_size: int = 16,
        r1_gamma: float = 0.0,
        diffaugment: str | list[str] | None = None,
        intra_fid: bool = False,
        fid_stats: str | None = None,
        fid_stats_cache: str | None = None,
    ) -> None:
        super().__init__()
        check_loss(loss)
        self._check_combinations(
            dict(loss=loss, d_norm=d_norm, g_norm=g_norm, r1_gamma=r1_gamma, intra_fid=intra_fid,
                 conditional=conditional), lambda key: f"model.{key}")
        if r1_gamma < 0:
            raise ValueError(f"gan.r1_gamma must be >= 0, got {r1_gamma}")
        if fid_stats is not None and fid_stats not in FID_STATS and not str(fid_stats).endswith(".npz"):
            raise ValueError(f"gan.fid_stats must be null, train or a path to an .npz with mu and sigma, "
                             f"got {fid_stats!r}")
        self.augment = DiffAugment(diffaugment)  # checks the policy names
        if g_batch_size is not None and g_batch_size < 2:
            raise ValueError(f"gan.g_batch_size must be >= 2 or null (the D batch size), got {g_batch_size}")
        if conditional and num_classes < 2:
            raise ValueError(f"model.conditional=true needs a labelled dataset (num_classes={num_classes})")
        if conditional != (g_norm == "cond_batch"):
            raise ValueError("class-conditional training pairs model.conditional=true with "
                             f"model.g_norm=cond_batch (got conditional={conditional}, g_norm={g_norm})")
        if n_dis < 1 or max_g_steps < 1:
            raise ValueError(f"n_dis and max_g_steps must be >= 1 (got {n_dis}, {max_g_steps})")
        if lr_decay not in ("linear", "none"):
            raise ValueError(f"model.lr_decay must be linear or none, got {lr_decay!r}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        k = num_classes if conditional else 0
        attn = attention_size if self_attention else None
        self.G = build_generator(g_arch, z_dim=z_dim, num_classes=k, norm=g_norm, image_size=image_size,
                                 channels=channels, width=g_width, spectral_norm=g_spectral_norm,
                                 attention_size=attn)
        self.D = build_discriminator(d_arch, norm=d_norm, num_classes=k, image_size=image_size,
                                     channels=channels, width=d_width, attention_size=attn)
        self.G_ema = make_ema(self.G, decay=ema_decay) if ema_decay > 0 else None
        # Counters live in buffers so checkpoints carry them and resume continues the count.
        self.register_buffer("g_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("d_steps", torch.zeros((), dtype=torch.long))
        gen = torch.Generator().manual_seed(eval_seed)
        self.register_buffer("fixed_z", torch.randn(grid_size, z_dim, generator=gen))
        self.register_buffer("fixed_y", torch.arange(grid_size) % max(k, 1))
        self.metrics = None  # built in setup(); kept out of state_dict on purpose
        self.feature_net_info: dict[str, Any] = {}
        self.fid_reference: dict[str, Any] = {}
        self._d_real: list[torch.Tensor] = []

    @classmethod
    def check_args(cls, args: Mapping[str, Any], *, prefix: str = "model") -> None:
        """Ranges, choices and combinations of the hyper-parameters in ``args`` (any subset),
        named ``<prefix>.<key>``; train.py's preflight calls it before anything is built (the
        constructor repeats the combination checks for modules built in code)."""
        from pathlib import Path

        from normapps.platform.options import as_choice, as_float, as_int, as_text

        def name(key: str) -> str:
            # The recipe keys are set as gan.<key> (conf/task/train/gan.yaml); model.<key> follows them.
            return f"gan.{key}" if prefix == "model" and key in GAN_RECIPE_KEYS else f"{prefix}.{key}"

        checks = {
            "g_arch": lambda k, v: as_choice(k, v, G_ARCHS),
            "d_arch": lambda k, v: as_choice(k, v, D_ARCHS),
            "g_norm": lambda k, v: as_choice(k, v, G_NORMS),
            "d_norm": lambda k, v: as_choice(k, v, D_NORMS),
            "loss": lambda k, v: as_choice(k, v, LOSSES),
            "lr_decay": lambda k, v: as_choice(k, v, ("linear", "none")),
            "num_classes": lambda k, v: as_int(k, v, min=0),
            "z_dim": lambda k, v: as_int(k, v, min=1),
            "g_width": lambda k, v: as_int(k, v, min=1),
            "d_width": lambda k, v: as_int(k, v, min=1),
            "image_size": lambda k, v: as_choice(k, v, (32, 64)),
            "channels": lambda k, v: as_int(k, v, min=1),
            "gp_weight": lambda k, v: as_float(k, v, min=0.0),
            "n_dis": lambda k, v: as_int(k, v, min=1),
            "max_g_steps": lambda k, v: as_int(k, v, min=1),
            "grad_clip": lambda k, v: as_float(k, v, min=0.0),
            "ema_decay": lambda k, v: as_float(k, v, min=0.0, max=0.999999),
            "ema_start": lambda k, v: as_int(k, v, min=0),
            "num_eval_samples": lambda k, v: as_int(k, v, min=2),
            "recal_batches": lambda k, v: as_int(k, v, min=1),
            "grid_size": lambda k, v: as_int(k, v, min=1),
            "local_feature_steps": lambda k, v: as_int(k, v, min=1),
            "kid_subset_size": lambda k, v: as_int(k, v, min=2),
            "g_batch_size": lambda k, v: as_int(k, v, min=2, allow_none=True),
            "attention_size": lambda k, v: as_int(k, v, min=4),
            "r1_gamma": lambda k, v: as_float(k, v, min=0.0),
            "fid_stats_cache": lambda k, v: as_text(k, v, allow_none=True),
        }
        apply_checks(checks, args, prefix=prefix, name=name)
        if "betas" in args:
            betas = args["betas"]
            if not isinstance(betas, (list, tuple)) or len(betas) != 2:
                raise OptionError(f"{name('betas')}={betas!r}: expected two numbers [beta1, beta2]")
            for i, b in enumerate(betas):
                as_float(f"{name('betas')}[{i}]", b, min=0.0, max=0.999999)
        if args.get("inception_weights") is not None:
            path = as_text(name("inception_weights"), args["inception_weights"])
            if not Path(path).is_file():
                raise FileNotFoundError(f"{name('inception_weights')}={path}: no such file (the FID "
                                        "InceptionV3 weights pt_inception-2015-12-05; null: fid_local)")
        if "diffaugment" in args:
            try:
                DiffAugment(args["diffaugment"])
            except (TypeError, ValueError) as err:
                raise OptionError(f"{name('diffaugment')}={args['diffaugment']!r}: {err}") from None
        fid_stats = args.get("fid_stats")
        if fid_stats is not None:
            text = as_text(name("fid_stats"), fid_stats)
            if text not in FID_STATS and not text.endswith(".npz"):
                raise OptionError(f"{name('fid_stats')}={fid_stats!r}: expected null, train or a path to "
                                  "an .npz with mu and sigma")
            if text.endswith(".npz") and not Path(text).is_file():
                raise FileNotFoundError(f"{name('fid_stats')}={text}: no such file")
        cls._check_combinations(args, name)

    @staticmethod
    def _check_combinations(args: Mapping[str, Any], name: Callable[[str], str]) -> None:
        get = args.get
        if get("loss") == "wgan_gp" and get("d_norm") == "batch":
            # The penalty is a per-sample gradient norm; batch statistics couple the samples, so
            # d D(x_i) / d x_i is not the critic's gradient at x_i (Gulrajani et al. use layer norm).
            raise OptionError(f"{name('loss')}=wgan_gp needs a per-sample critic: {name('d_norm')}=batch "
                              "couples the samples through batch statistics; use d_norm=layer (as the "
                              "WGAN-GP paper) or spectral/weight/none")
        if (get("r1_gamma") or 0) > 0 and get("d_norm") == "batch":
            raise OptionError(f"{name('r1_gamma')}={get('r1_gamma')} penalizes per-sample gradients of D; "
                              f"{name('d_norm')}=batch couples the samples through batch statistics: use "
                              "another d_norm")
        if get("intra_fid") and not get("conditional"):
            raise OptionError(f"{name('intra_fid')}=true needs a class-conditional model "
                              f"({name('conditional')}=true)")
        if "conditional" in args and "g_norm" in args and bool(get("conditional")) != (get("g_norm") == "cond_batch"):
            raise OptionError(f"class-conditional training pairs {name('conditional')}=true with "
                              f"{name('g_norm')}=cond_batch (got conditional={get('conditional')}, "
                              f"g_norm={get('g_norm')})")
        if get("self_attention") and "attention_size" in args and "image_size" in args:
            size, image = int(get("attention_size")), int(get("image_size"))
            if size > image or size & (size - 1):
                raise OptionError(f"{name('attention_size')}={size}: self-attention sits at a feature "
                                  f"map of side 8..{image} (a power of two)")

    # ------------------------------------------------------------------ checkpoints
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        checkpoint["state_dict"] = upgrade_state_dict(checkpoint["state_dict"])

    @classmethod
    def from_checkpoint_dict(cls, checkpoint: dict[str, Any]) -> "GANModule":
        module = cls(**dict(checkpoint.get("hyper_parameters", {})))
        module.load_state_dict(upgrade_state_dict(checkpoint["state_dict"]))
        return module

    # ------------------------------------------------------------------ sampling
    @property
    def num_cond(self) -> int:
        return self.hparams.num_classes if self.hparams.conditional else 0

    def generator(self, use_ema: bool | None = None) -> torch.nn.Module:
        use_ema = self.hparams.use_ema if use_ema is None else use_ema
        return self.G_ema if (use_ema and self.G_ema is not None) else self.G

    def sample_latent(self, n: int, *, generator: torch.Generator | None = None,
                      labels: torch.Tensor | None = None, truncation: float | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if truncation is not None:
            z = truncated_normal(n, self.hparams.z_dim, psi=truncation, generator=generator)
        else:
            z = torch.randn(n, self.hparams.z_dim, generator=generator,
                            device=self.device if generator is None else "cpu")
        z = z.to(self.device)
        if not self.num_cond:
            return z, None
        if labels is None:
            labels = torch.randint(0, self.num_cond, (n,), generator=generator,
                                   device=self.device if generator is None else "cpu")
        return z, labels.to(self.device)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, y: torch.Tensor | None = None, *, use_ema: bool | None = None) -> torch.Tensor:
        """Images in [0, 1] from latents (eval mode)."""
        g = self.generator(use_ema)
        mode = g.training
        g.eval()
        try:
            return (g(z, y).float() + 1) / 2
        finally:
            g.train(mode)

    @torch.no_grad()
    def recalibrate_ema(self) -> None:
        """Re-estimate the EMA generator's BN statistics from fixed-seed latents."""
        if self.G_ema is None:
            return
        hp = self.hparams
        refresh_spectral_vectors(self.G_ema, n_power_iterations=EMA_SN_REFRESH_ITERATIONS)
        gen = torch.Generator().manual_seed(hp.eval_seed + 1)
        batches = [self.sample_latent(hp.eval_batch_size, generator=gen) for _ in range(hp.recal_batches)]
        recalibrate_ema_bn(self.G_ema, batches, forward_fn=lambda m, b: m(*b))

    def _cond(self, y: torch.Tensor | None) -> torch.Tensor | None:
        return y if self.num_cond else None

    # ------------------------------------------------------------------ training
    def setup(self, stage: str) -> None:
        if self.metrics is not None or stage not in ("fit", "validate"):
            return
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            raise RuntimeError("the GAN module needs a datamodule (for real images in FID/KID)")
        from normapps.tasks.gan.metrics import (GANMetrics, InceptionFeatures, feature_net_sha256,
                                                fid_reference_statistics, get_local_feature_net,
                                                load_fid_statistics)

        hp = self.hparams
        if hp.inception_weights:
            extractor, suffix, with_is = InceptionFeatures(hp.inception_weights), "", True
            self.feature_net_info = {"kind": "inception-v3-compat", "weights": str(hp.inception_weights)}
        else:
            x, y = dm.real_tensors(max_items=50000)
            extractor = get_local_feature_net(x, y if dm.num_classes else None,
                                              steps=hp.local_feature_steps, seed=0,
                                              cache_dir=hp.local_feature_cache)
            suffix, with_is = "_local", bool(getattr(extractor, "supervised", False))
            self.feature_net_info = {"kind": "local", "steps": int(hp.local_feature_steps),
                                     "supervised": with_is}
        # fid_local values are comparable only between runs whose feature networks share this.
        self.feature_net_info["sha256"] = feature_net_sha256(extractor)
        reference = None
        if hp.fid_stats == "train":
            images, _ = dm.real_tensors()
            reference, info = fid_reference_statistics(extractor, images, cache_dir=hp.fid_stats_cache,
                                                       batch_size=hp.eval_batch_size)
            self.fid_reference = {"kind": "train", **info}
        elif hp.fid_stats:
            reference = load_fid_statistics(hp.fid_stats, num_features=extractor.num_features)
            self.fid_reference = {"kind": "file", "path": str(hp.fid_stats)}
        else:
            self.fid_reference = {"kind": "eval_subset", "num_images": len(dm.eval_set)}
        self.metrics = GANMetrics(extractor, suffix=suffix, with_is=with_is,
                                  kid_subset_size=hp.kid_subset_size, reference_stats=reference,
                                  intra_fid_classes=self.num_cond if hp.intra_fid else 0)

    def training_step(self, batch, batch_idx: int) -> None:
        hp = self.hparams
        x, y = batch[0] * 2 - 1, self._cond(batch[1])
        opt_g, opt_d = self.optimizers()
        n = x.shape[0]

        # Discriminator: one step per real batch; the fakes' labels are drawn uniformly, as in
        # the references (pfnet sngan_projection, StudioGAN), not copied from the real batch.
        # With DiffAugment every image D sees, real or fake, is augmented (Zhao et al. 2020).
        self.toggle_optimizer(opt_d)
        z, y_fake = self.sample_latent(n)
        with torch.no_grad():
            fake = self.G(z, y_fake)
        x_d, fake_d = (self.augment(x), self.augment(fake)) if self.augment else (x, fake)
        d_real, d_fake = self.D(x_d, y), self.D(fake_d, y_fake)
        loss_d = d_loss(hp.loss, d_real, d_fake)
        if hp.loss == "wgan_gp":
            gp = gradient_penalty(lambda t: self.D(t, y), x_d, fake_d)
            loss_d = loss_d + hp.gp_weight * gp
            self.log("train/gp", gp, batch_size=n)
        if hp.r1_gamma > 0:
            # R1 (Mescheder et al. 2018): gamma / 2 * E ||grad D(x_real)||^2.
            r1 = r1_penalty(lambda t: self.D(t, y), x_d)
            loss_d = loss_d + 0.5 * hp.r1_gamma * r1
            self.log("train/r1", r1, batch_size=n)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        self._clip(opt_d)
        opt_d.step()
        self.untoggle_optimizer(opt_d)
        self.d_steps += 1
        self.log_dict({"train/d_loss": loss_d, "train/d_real": d_real.float().mean(),
                       "train/d_fake": d_fake.float().mean()}, prog_bar=True, batch_size=n)

        if int(self.d_steps) % hp.n_dis:
            return
        # Generator: every n_dis discriminator steps, on g_batch_size samples (pfnet's SN-GAN
        # configs: 128 generated per G step with a D batch of 64).
        self.toggle_optimizer(opt_g)
        z, yg = self.sample_latent(hp.g_batch_size or n)
        fake = self.G(z, yg)
        loss_g = g_loss(hp.loss, self.D(self.augment(fake) if self.augment else fake, yg))
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        self._clip(opt_g)
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self.g_steps += 1
        if self.G_ema is not None:
            ema_update(self.G_ema, self.G, restart=int(self.g_steps) <= hp.ema_start)
        for sched in self._schedulers():
            sched.step()
        self.log_dict({"train/g_loss": loss_g, "train/g_steps": self.g_steps.float(),
                       "train/lr_g": opt_g.param_groups[0]["lr"]}, prog_bar=True, batch_size=n)
        if int(self.g_steps) >= hp.max_g_steps:
            self.trainer.should_stop = True

    def _clip(self, opt) -> None:
        if self.hparams.grad_clip > 0:
            self.clip_gradients(opt, gradient_clip_val=self.hparams.grad_clip,
                                gradient_clip_algorithm="norm")

    def _schedulers(self) -> list:
        s = self.lr_schedulers()
        return [] if s is None else (list(s) if isinstance(s, (list, tuple)) else [s])

    def configure_optimizers(self):
        hp = self.hparams
        betas = tuple(hp.betas)
        opt_g = torch.optim.Adam(self.G.parameters(), lr=hp.lr_g, betas=betas)
        opt_d = torch.optim.Adam(self.D.parameters(), lr=hp.lr_d, betas=betas)
        if hp.lr_decay == "none":
            return [opt_g, opt_d]
        total = hp.max_g_steps

        def linear(step: int) -> float:  # stepped once per generator iteration
            return max(0.0, 1.0 - step / total)

        scheds = [torch.optim.lr_scheduler.LambdaLR(o, linear) for o in (opt_g, opt_d)]
        return [opt_g, opt_d], scheds

    # ------------------------------------------------------------------ evaluation
    def on_validation_epoch_start(self) -> None:
        self._d_real = []
        if self.metrics is not None:
            self.metrics.to(self.device)
            self.metrics.reset_fake()

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        with torch.no_grad():
            self._d_real.append(self.D(x * 2 - 1, self._cond(y)).float())
        if self.metrics is not None and not getattr(self, "_real_done", False):
            self.metrics.update(x, real=True, labels=y)

    def _eval_latents(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """This process's share of the ``n`` fixed-seed evaluation latents, in batches.

        Every process draws the same ``n`` latents and keeps the rows ``rank::world_size``, so
        after torchmetrics sums the metric states each generated image counts once and the set
        is the single-process one, whatever the number of processes."""
        rank, world = (0, 1) if self._trainer is None else (self.global_rank, self.trainer.world_size)
        z, y = self.sample_latent(n, generator=torch.Generator().manual_seed(self.hparams.eval_seed))
        z = z[rank::world]
        y = None if y is None else y[rank::world]
        bs = self.hparams.eval_batch_size
        return [(z[i:i + bs], None if y is None else y[i:i + bs]) for i in range(0, len(z), bs)]

    @torch.no_grad()
    def evaluate_generator(self) -> dict[str, float]:
        """Re-estimate EMA BN statistics, then sample with a fixed seed and score."""
        hp = self.hparams
        out: dict[str, float] = {}
        if hp.use_ema:
            self.recalibrate_ema()
        d_fake = []
        for z, y in self._eval_latents(hp.num_eval_samples):
            imgs = self.sample(z, y)
            d_fake.append(self.D(self.sample(z, y, use_ema=False) * 2 - 1, y).float())
            if self.metrics is not None:
                self.metrics.update(imgs, real=False, labels=y)
        if self.metrics is not None:
            out.update({f"val/{k}": v for k, v in self.metrics.compute().items()})
            # Generated images the metrics saw, summed over all processes.
            n_fake = torch.tensor(float(self.metrics.num_fake), device=self.device)
            if self._trainer is not None:
                n_fake = self.trainer.strategy.reduce(n_fake, reduce_op="sum")
            out["val/num_fake"] = float(n_fake)
        out["val/d_fake"] = float(torch.cat(d_fake).mean())
        return out

    def on_validation_epoch_end(self) -> None:
        if self.metrics is not None and self._d_real:
            self._real_done = True
        scores = self.evaluate_generator()
        if self._d_real:
            scores["val/d_real"] = float(torch.cat(self._d_real).mean())
        sigmas = spectral_norm_estimates(self.D)
        scores.update({f"val/sigma/{name}": s for name, s in sigmas.items()})
        scores["val/sigma_max"] = max(sigmas.values())
        scores["val/g_steps"] = float(self.g_steps)
        self.log_dict(scores, sync_dist=True)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            grid = make_grid(self.sample(self.fixed_z, self._cond(self.fixed_y)), nrow=8, padding=1)
            log_image(self, "val/samples", grid, caption=f"g_step {int(self.g_steps)}")

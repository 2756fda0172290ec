"""infer.py's GAN runner: PNG samples, one grid, optional latent interpolation strip, optional
truncation trick (``truncation=<psi>``: latents resampled into [-psi, psi], Brock et al. 2019)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torchvision.utils import make_grid, save_image

from normapps.platform.checkpoint import load_module
from normapps.platform.inference import require_finite
from normapps.platform.options import (TaskOptions, bool_option, float_option, int_option, seed_option,
                                       text_option)


@dataclass(frozen=True)
class GanInferOptions(TaskOptions):
    """infer.py task=gan's options, checked together before the checkpoint loads."""
    ckpt_path: str
    num_samples: int
    batch_size: int
    grid_nrow: int
    label: int | None
    interpolate: bool
    interpolate_rows: int
    interpolate_steps: int
    # Latents are resampled into [-truncation, truncation]; None: plain N(0, 1).
    truncation: float | None
    use_ema: bool
    seed: int


def validate(cfg: DictConfig) -> GanInferOptions:
    # Counts that must be positive; checked here, since 0 crashed make_grid / range() after every
    # sample was generated (issue 12 item 9). Types are checked by the platform's run_infer.
    counts = {key: int_option(cfg, key, min=1)
              for key in ("grid_nrow", "interpolate_rows", "batch_size", "num_samples")}
    steps = int_option(cfg, "interpolate_steps", min=2)
    label = int_option(cfg, "label", min=0, allow_none=True)
    truncation = float_option(cfg, "truncation", min=0.0, min_open=True, allow_none=True)
    interpolate = bool_option(cfg, "interpolate")
    use_ema = bool_option(cfg, "use_ema")
    if not cfg.get("ckpt_path"):
        raise ValueError("ckpt_path=<checkpoint of a task=gan run> is required")
    return GanInferOptions(ckpt_path=text_option(cfg, "ckpt_path"), label=label, interpolate=interpolate,
                           interpolate_steps=steps, truncation=truncation, use_ema=use_ema,
                           seed=seed_option(cfg), **counts)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latent rows a and b at fractions t (Gaussian latents
    keep their norm along the path, unlike a straight line)."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    t = t.view(-1, 1)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def run(cfg: DictConfig, *, device: torch.device, output_dir: Path) -> dict[str, Any]:
    opts = validate(cfg)
    module = load_module(opts.ckpt_path, expected_task="gan").to(device)
    k = module.num_cond
    label = opts.label
    if label is not None:
        if not k:
            raise ValueError("label=... needs a class-conditional checkpoint (model.conditional=true)")
        if not 0 <= int(label) < k:
            raise ValueError(f"label must be in [0, {k - 1}], got {label}")
    use_ema = opts.use_ema
    if use_ema and module.G_ema is None:
        raise ValueError("use_ema=true but this checkpoint has no EMA generator (ema_decay=0); pass use_ema=false")
    if use_ema:
        # The EMA copies the live BN statistics at every step; re-estimate them for its weights.
        module.recalibrate_ema()
    gen = torch.Generator().manual_seed(opts.seed)
    n = opts.num_samples
    labels = torch.full((n,), int(label), dtype=torch.long) if label is not None else None
    psi = opts.truncation
    z, y = module.sample_latent(n, generator=gen, labels=labels, truncation=psi)
    bs = opts.batch_size
    images = torch.cat([module.sample(z[i:i + bs], None if y is None else y[i:i + bs], use_ema=use_ema)
                        for i in range(0, n, bs)])
    require_finite(images, "the generated samples")  # NaN samples would be saved as black
    sample_dir = output_dir / "samples"
    sample_dir.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        save_image(img, sample_dir / f"sample_{i:05d}.png")
    grid_path = output_dir / "grid.png"
    save_image(make_grid(images, nrow=opts.grid_nrow, padding=1), grid_path)
    result: dict[str, Any] = {"num_samples": n, "samples_dir": str(sample_dir), "grid": str(grid_path),
                              "generator": "ema" if use_ema else "raw", "label": label,
                              "seed": opts.seed, "truncation": psi}
    if opts.interpolate:
        rows, steps = opts.interpolate_rows, opts.interpolate_steps
        ends, ey = module.sample_latent(2 * rows, generator=gen, truncation=psi,
                                        labels=None if labels is None else labels[:1].repeat(2 * rows))
        t = torch.linspace(0, 1, steps, device=ends.device)
        path = torch.cat([slerp(ends[2 * r].expand(steps, -1), ends[2 * r + 1].expand(steps, -1), t)
                          for r in range(rows)])
        py = None if ey is None else ey[:1].repeat(rows * steps)
        strip = module.sample(path, py, use_ema=use_ema)
        strip_path = output_dir / "interpolation.png"
        save_image(make_grid(strip, nrow=steps, padding=1), strip_path)
        result["interpolation"] = str(strip_path)
    return result

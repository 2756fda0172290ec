"""infer.py's GAN runner: PNG samples, one grid, optional latent interpolation strip, optional
truncation trick (``truncation=<psi>``: latents resampled into [-psi, psi], Brock et al. 2019)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torchvision.utils import make_grid, save_image

from normapps.platform.checkpoint import load_module
from normapps.platform.inference import require_finite
from normapps.platform.options import bool_option, float_option, int_option


def _validate(cfg: DictConfig) -> None:
    # Counts that must be positive; checked here, since 0 crashed make_grid / range() after every
    # sample was generated (issue 12 item 9). Types are checked by the platform's run_infer.
    for key in ("grid_nrow", "interpolate_rows", "batch_size", "num_samples"):
        int_option(cfg, key, min=1)
    int_option(cfg, "interpolate_steps", min=2)
    int_option(cfg, "label", min=0, allow_none=True)
    # Latents are resampled into [-truncation, truncation]; null: plain N(0, 1).
    float_option(cfg, "truncation", min=0.0, min_open=True, allow_none=True)
    bool_option(cfg, "interpolate")
    bool_option(cfg, "use_ema")
    if not cfg.get("ckpt_path"):
        raise ValueError("ckpt_path=<checkpoint of a task=gan run> is required")


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latent rows a and b at fractions t (Gaussian latents
    keep their norm along the path, unlike a straight line)."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    t = t.view(-1, 1)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def run(cfg: DictConfig, *, device: torch.device, output_dir: Path) -> dict[str, Any]:
    _validate(cfg)
    module = load_module(cfg.ckpt_path, expected_task="gan").to(device)
    k = module.num_cond
    label = cfg.get("label")
    if label is not None:
        if not k:
            raise ValueError("label=... needs a class-conditional checkpoint (model.conditional=true)")
        if not 0 <= int(label) < k:
            raise ValueError(f"label must be in [0, {k - 1}], got {label}")
    use_ema = bool(cfg.use_ema)
    if use_ema and module.G_ema is None:
        raise ValueError("use_ema=true but this checkpoint has no EMA generator (ema_decay=0); pass use_ema=false")
    if use_ema:
        # The EMA copies the live BN statistics at every step; re-estimate them for its weights.
        module.recalibrate_ema()
    gen = torch.Generator().manual_seed(int(cfg.seed))
    n = int(cfg.num_samples)
    labels = torch.full((n,), int(label), dtype=torch.long) if label is not None else None
    psi = None if cfg.get("truncation") is None else float(cfg.truncation)
    z, y = module.sample_latent(n, generator=gen, labels=labels, truncation=psi)
    bs = int(cfg.batch_size)
    images = torch.cat([module.sample(z[i:i + bs], None if y is None else y[i:i + bs], use_ema=use_ema)
                        for i in range(0, n, bs)])
    require_finite(images, "the generated samples")  # NaN samples would be saved as black
    sample_dir = output_dir / "samples"
    sample_dir.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images):
        save_image(img, sample_dir / f"sample_{i:05d}.png")
    grid_path = output_dir / "grid.png"
    save_image(make_grid(images, nrow=int(cfg.grid_nrow), padding=1), grid_path)
    result: dict[str, Any] = {"num_samples": n, "samples_dir": str(sample_dir), "grid": str(grid_path),
                              "generator": "ema" if use_ema else "raw", "label": label,
                              "seed": int(cfg.seed), "truncation": psi}
    if cfg.interpolate:
        rows, steps = int(cfg.interpolate_rows), int(cfg.interpolate_steps)
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

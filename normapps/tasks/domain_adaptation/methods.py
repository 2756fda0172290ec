"""The adaptation methods by name (``adapt=none|test_bn|adabn|tent|dsbn``) and their options."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from normapps.tasks.domain_adaptation.adabn import predict_adabn
from normapps.tasks.domain_adaptation.dsbn import check_dsbn_options, predict_dsbn
from normapps.tasks.domain_adaptation.source_only import predict_source
from normapps.tasks.domain_adaptation.tent import check_tent_options, predict_tent
from normapps.tasks.domain_adaptation.test_bn import predict_test_bn

METHODS = ("none", "test_bn", "adabn", "tent", "dsbn")


def resolve_methods(spec: str | list | tuple) -> list[str]:
    """``all``, one method or a list of methods -> validated names in table order."""
    names = list(METHODS) if spec == "all" else [spec] if isinstance(spec, str) else list(spec)
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        raise ValueError(f"unknown adapt method(s) {bad or names}; choose from all, {', '.join(METHODS)}")
    return names


def method_options(name: str, adapt_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword options of method ``name`` taken from the ``adapt`` config (flat keys)."""
    get = adapt_cfg.get
    if name == "adabn":
        alpha = get("alpha")
        return {"alpha": None if alpha is None else float(alpha)}
    if name == "tent":
        return {"lr": float(get("lr", 1e-3)), "steps": int(get("steps", 1)),
                "mode": str(get("mode", "continual")), "reset_every": get("reset_every")}
    if name == "dsbn":
        return {"threshold": float(get("threshold", 0.9)),
                "stage1_epochs": int(get("stage1_epochs", 3)),
                "stage2_epochs": int(get("stage2_epochs", 2)),
                "lr": float(get("dsbn_lr", 0.01)),
                "target_weight": float(get("target_weight", 1.0)),
                "train_batch_size": int(get("dsbn_batch_size", 64))}
    return {}


def validate_options(names: list[str], adapt_cfg: Mapping[str, Any]) -> None:
    """Raise on a bad option before any training happens."""
    for name in names:
        opts = method_options(name, adapt_cfg)
        if name == "adabn" and opts["alpha"] is not None and not 0 <= opts["alpha"] <= 1:
            raise ValueError(f"adapt.alpha must be in [0, 1] or null, got {opts['alpha']}")
        if name == "tent":
            check_tent_options(**opts)
        if name == "dsbn":
            opts.pop("train_batch_size")
            check_dsbn_options(**opts)


def adapt_and_predict(name: str, model: nn.Module, target: torch.Tensor, *, batch_size: int,
                      options: Mapping[str, Any] | None = None,
                      sources: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                      seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits of method ``name`` on the (unlabelled) ``target`` images.

    ``model`` is never modified; ``sources`` (labelled (images, labels) per source domain) is
    needed by dsbn only.
    """
    options = dict(options or {})
    kw = dict(batch_size=batch_size, device=device)
    if name == "none":
        return predict_source(model, target, **kw)
    if name == "test_bn":
        return predict_test_bn(model, target, **kw)
    if name == "adabn":
        return predict_adabn(model, target, **kw, **options)
    if name == "tent":
        return predict_tent(model, target, **kw, **options)
    if name == "dsbn":
        if not sources:
            raise ValueError("adapt=dsbn needs labelled source data")
        return predict_dsbn(model, target, sources=sources, seed=seed, **kw, **options)
    raise ValueError(f"unknown adapt method {name!r}; choose from {', '.join(METHODS)}")

"""The adaptation methods by name (``adapt=none|test_bn|prior_bn|adabn|tent|eata|sar|dsbn``),
their protocol, and their options.

Options live under ``adapt.<method>.*`` (``adapt.tent.lr``, ``adapt.eata.d_margin``, ...), except
``adapt.prior_n`` (a contract name). The flat names of the previous release (``adapt.lr``,
``adapt.mode``, ``adapt.reset_every``, ``adapt.steps``, ``adapt.alpha``, ``adapt.threshold``,
``adapt.stage1_epochs``, ``adapt.stage2_epochs``, ``adapt.dsbn_lr``, ``adapt.target_weight``,
``adapt.dsbn_batch_size``, ``adapt.extra_sources``) still work, with a deprecation warning: on
the command line ``normapps.platform.config_keys`` (the one table of renamed keys) moves them to
their new names before any check; :func:`method_config` still reads them in a plain mapping, for
callers of this module's functions.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Mapping

import torch
from torch import nn

from normapps.norm import bn_modules
from normapps.tasks.domain_adaptation.adabn import predict_adabn
from normapps.tasks.domain_adaptation.dsbn import check_dsbn_options, predict_dsbn
from normapps.tasks.domain_adaptation.eata import check_eata_options, predict_eata
from normapps.tasks.domain_adaptation.online import (
    check_norm_kinds, check_online_options, has_adaptable_norms,
)
from normapps.tasks.domain_adaptation.prior_bn import predict_prior_bn
from normapps.tasks.domain_adaptation.sar import check_sar_options, predict_sar
from normapps.tasks.domain_adaptation.source_only import predict_source
from normapps.tasks.domain_adaptation.tent import predict_tent
from normapps.tasks.domain_adaptation.test_bn import predict_test_bn

log = logging.getLogger(__name__)

METHODS = ("none", "test_bn", "prior_bn", "adabn", "tent", "eata", "sar", "dsbn")

# online: each batch is predicted while (or right after) the method adapts on it, in stream
# order; offline: the method sees the whole target (stream) first, then predicts.
PROTOCOLS = {"none": "source", "test_bn": "online", "prior_bn": "online", "adabn": "offline",
             "tent": "online", "eata": "online", "sar": "online", "dsbn": "offline"}
LABELS = {"none": "source model", "test_bn": "test-time BN", "prior_bn": "BN with source prior",
          "adabn": "AdaBN", "tent": "TENT", "eata": "EATA", "sar": "SAR",
          "dsbn": "DSBN + self-training"}

# Defaults of every method's options (the conf/adapt files hold the same values).
DEFAULTS: dict[str, dict[str, Any]] = {
    "adabn": {"alpha": None},
    "tent": {"lr": 1e-3, "steps": 1, "mode": "continual", "reset_every": 10, "norms": ["batch"],
             "optimizer": "adam"},
    "eata": {"lr": 2.5e-4, "optimizer": "sgd", "norms": ["batch"], "e_margin": 0.4, "d_margin": 0.4,
             "fisher_alpha": 2000.0, "fisher_size": 512},
    "sar": {"lr": 2.5e-4, "optimizer": "sgd", "norms": ["batch", "group", "layer"], "exclude": [],
            "e_margin": 0.4, "rho": 0.05, "reset_constant": 0.2},
    "dsbn": {"threshold": 0.9, "stage1_epochs": 3, "stage2_epochs": 2, "lr": 0.01,
             "target_weight": 1.0, "batch_size": 64, "extra_sources": []},
}

# Previous release's flat keys -> (method, option).
DEPRECATED = {"alpha": ("adabn", "alpha"), "lr": ("tent", "lr"), "steps": ("tent", "steps"),
              "mode": ("tent", "mode"), "reset_every": ("tent", "reset_every"),
              "threshold": ("dsbn", "threshold"), "stage1_epochs": ("dsbn", "stage1_epochs"),
              "stage2_epochs": ("dsbn", "stage2_epochs"), "dsbn_lr": ("dsbn", "lr"),
              "target_weight": ("dsbn", "target_weight"), "dsbn_batch_size": ("dsbn", "batch_size"),
              "extra_sources": ("dsbn", "extra_sources")}


def resolve_methods(spec: str | list | tuple) -> list[str]:
    """``all``, one method or a list of methods -> validated names in table order."""
    names = list(METHODS) if spec == "all" else [spec] if isinstance(spec, str) else list(spec)
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        raise ValueError(f"unknown adapt method(s) {bad or names}; choose from all, {', '.join(METHODS)}")
    return names


def method_config(adapt_cfg: Mapping[str, Any], *, warn: bool = True) -> dict[str, dict[str, Any]]:
    """Every method's options: defaults, then ``adapt.<method>.*``, then deprecated flat keys."""
    out = {m: copy.deepcopy(d) for m, d in DEFAULTS.items()}
    for m in out:
        block = adapt_cfg.get(m)
        if isinstance(block, Mapping):
            unknown = set(block) - set(out[m])
            if unknown:
                raise ValueError(f"unknown option(s) adapt.{m}.{{{', '.join(sorted(unknown))}}}; "
                                 f"adapt.{m} takes {', '.join(out[m])}")
            out[m].update(block)
    for flat, (m, key) in DEPRECATED.items():
        value = adapt_cfg.get(flat)
        if value is None or (flat == "extra_sources" and value == []):
            continue
        if warn:
            log.warning("adapt.%s is deprecated (kept for one release): use adapt.%s.%s", flat, m, key)
        out[m][key] = value
    return out


def method_options(name: str, adapt_cfg: Mapping[str, Any], *, warn: bool = False) -> dict[str, Any]:
    """The keyword options of method ``name``'s predict function."""
    cfg = method_config(adapt_cfg, warn=warn)
    if name == "adabn":
        alpha = cfg["adabn"]["alpha"]
        return {"alpha": None if alpha is None else float(alpha)}
    if name == "prior_bn":
        return {"prior_n": float(adapt_cfg.get("prior_n", 16))}
    if name == "tent":
        o = cfg["tent"]
        return {"lr": float(o["lr"]), "steps": int(o["steps"]), "mode": str(o["mode"]),
                "reset_every": o["reset_every"], "norms": list(o["norms"]), "optimizer": str(o["optimizer"])}
    if name == "eata":
        o = cfg["eata"]
        return {"lr": float(o["lr"]), "optimizer": str(o["optimizer"]), "norms": list(o["norms"]),
                "e_margin": float(o["e_margin"]), "d_margin": float(o["d_margin"]),
                "fisher_alpha": float(o["fisher_alpha"]), "fisher_size": int(o["fisher_size"])}
    if name == "sar":
        o = cfg["sar"]
        return {"lr": float(o["lr"]), "optimizer": str(o["optimizer"]), "norms": list(o["norms"]),
                "exclude": list(o["exclude"] or []), "e_margin": float(o["e_margin"]),
                "rho": float(o["rho"]), "reset_constant": float(o["reset_constant"])}
    if name == "dsbn":
        o = cfg["dsbn"]
        return {"threshold": float(o["threshold"]), "stage1_epochs": int(o["stage1_epochs"]),
                "stage2_epochs": int(o["stage2_epochs"]), "lr": float(o["lr"]),
                "target_weight": float(o["target_weight"]), "train_batch_size": int(o["batch_size"])}
    return {}


def validate_options(names: list[str], adapt_cfg: Mapping[str, Any]) -> None:
    """Raise on a bad option before any training happens (and warn on deprecated names)."""
    method_config(adapt_cfg, warn=True)
    for name in names:
        opts = method_options(name, adapt_cfg)
        if name == "adabn" and opts["alpha"] is not None and not 0 <= opts["alpha"] <= 1:
            raise ValueError(f"adapt.adabn.alpha must be in [0, 1] or null, got {opts['alpha']}")
        if name == "prior_bn" and not opts["prior_n"] >= 0:
            raise ValueError(f"adapt.prior_n must be >= 0 (source pseudo-samples), got {opts['prior_n']}")
        if name in ("tent", "eata", "sar"):
            check_norm_kinds(opts["norms"], f"adapt.{name}.norms")
            check_online_options(f"adapt.{name}", lr=opts["lr"], steps=opts.get("steps", 1),
                                 mode=opts.get("mode", "continual"), reset_every=opts.get("reset_every"),
                                 optimizer=opts["optimizer"])
        if name == "eata":
            check_eata_options(e_margin=opts["e_margin"], d_margin=opts["d_margin"],
                               fisher_alpha=opts["fisher_alpha"], fisher_size=opts["fisher_size"])
        if name == "sar":
            check_sar_options(e_margin=opts["e_margin"], rho=opts["rho"], reset_constant=opts["reset_constant"])
        if name == "dsbn":
            opts.pop("train_batch_size")
            check_dsbn_options(**opts)


def not_applicable(name: str, model: nn.Module, options: Mapping[str, Any]) -> str | None:
    """Why ``name`` cannot adapt ``model`` (None when it can)."""
    if name == "dsbn" and not bn_modules(model):
        return "DSBN splits BatchNorm layers and the model has none"
    if name in ("tent", "eata", "sar") and not has_adaptable_norms(model, options["norms"],
                                                                  options.get("exclude", ())):
        return f"no {'/'.join(options['norms'])} norm layers to adapt (adapt.{name}.norms)"
    return None


def norm_kind_applicable(name: str, norm: str, options: Mapping[str, Any]) -> bool:
    """Whether ``name`` can adapt a classifier built with ``model.norm=norm`` (checked before
    training; ``norm`` is a build_norm kind)."""
    if name == "dsbn":
        return norm == "batch"
    if name in ("tent", "eata", "sar"):
        return norm in options["norms"]
    return True


def adapt_and_predict(name: str, model: nn.Module, target: torch.Tensor, *, batch_size: int,
                      options: Mapping[str, Any] | None = None,
                      sources: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
                      seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits of method ``name`` on the (unlabelled) ``target`` images, in stream order.

    ``model`` is never modified; ``sources`` (labelled (images, labels) per source domain) is
    needed by dsbn, and by eata (clean images for its Fisher information).
    """
    options = dict(options or {})
    kw = dict(batch_size=batch_size, device=device)
    if name == "none":
        return predict_source(model, target, **kw)
    if name == "test_bn":
        return predict_test_bn(model, target, **kw)
    if name == "prior_bn":
        return predict_prior_bn(model, target, **kw, **options)
    if name == "adabn":
        return predict_adabn(model, target, **kw, **options)
    if name == "tent":
        return predict_tent(model, target, **kw, **options)
    if name == "eata":
        source_images = sources[0][0] if sources else None
        return predict_eata(model, target, source_images=source_images, **kw, **options)
    if name == "sar":
        return predict_sar(model, target, **kw, **options)
    if name == "dsbn":
        if not sources:
            raise ValueError("adapt=dsbn needs labelled source data")
        return predict_dsbn(model, target, sources=sources, seed=seed, **kw, **options)
    raise ValueError(f"unknown adapt method {name!r}; choose from {', '.join(METHODS)}")

"""``adapt=prior_bn``: test-time BN with a source prior (Schneider et al. 2020).

Every BN normalizes a target batch of n samples with its source statistics weighted as
``adapt.prior_n`` = N pseudo-samples and the batch statistics as n samples (core
``use_prior_stats``): the standard fix for small test batches, where a batch's own statistics
are too noisy. N = 0 is ``test_bn``, a very large N the unadapted source model.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from normapps.norm import use_prior_stats
from normapps.tasks.domain_adaptation.common import predict_logits


def predict_prior_bn(model: nn.Module, target: torch.Tensor, *, batch_size: int, prior_n: float = 16,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    adapted = use_prior_stats(copy.deepcopy(model).eval(), prior_n)
    return predict_logits(adapted, target, batch_size=batch_size, device=device)

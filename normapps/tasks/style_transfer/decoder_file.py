"""A trained AdaIN decoder as a small standalone file that knows its encoder.

The file holds the decoder's weights (fp16 by default: half the size, and the decoder is run in
fp32/bf16 anyway) and the ``EncoderInfo`` of the encoder it was trained against: registry
entry, sha256 of the weight file, layout and the activation-normalization scales. So a user
with only the file (and the encoder's source, e.g. the packaged VGG-16) rebuilds exactly the
training-time encoder, and a decoder is never paired with another encoder silently.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from normapps.platform.checkpoint import CheckpointError, safe_load
from normapps.tasks.style_transfer.decoder import Decoder
from normapps.tasks.style_transfer.vgg import EncoderInfo

FORMAT = "normapps.adain_decoder"
VERSION = 1
# The registry entry of the decoder shipped inside normapps (experiment=adain_bundled).
SHIPPED_DECODER = "adain_decoder_bundled"


def resolve_decoder_file(name_or_path: str) -> Path:
    """``shipped`` (or the entry name) -> the verified shipped file; else a path that exists."""
    if name_or_path in ("shipped", SHIPPED_DECODER):
        from normapps.weights import locate

        return locate(SHIPPED_DECODER)
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"decoder file not found: {path}")
    return path


def shipped_decoder_usable(encoder_weights: str = "auto") -> tuple[bool, str]:
    """Whether ``decoder_init=auto`` can fine-tune the shipped decoder: the file and the encoder
    it needs are on this machine and the encoder choice leaves room for it. Returns (usable,
    the reason when not), so the run can say why it trains from scratch."""
    from normapps.weights import WeightError, status

    if encoder_weights not in ("auto", "packaged"):
        return False, f"model.encoder.weights={encoder_weights} is not the shipped decoder's encoder"
    ok, where = status(SHIPPED_DECODER)
    if not ok:
        return False, where
    try:
        _, needs, _ = load_decoder_file(Path(where))
    except (CheckpointError, WeightError, ValueError) as err:
        return False, str(err)
    if needs.entry:
        ok, where = status(needs.entry)
        if not ok:
            return False, f"its encoder {needs.entry} is not available: {where}"
    return True, ""


def is_decoder_file(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def save_decoder_file(path: str | Path, decoder: Decoder, encoder_info: EncoderInfo, *,
                      unbiased: bool = True, eps: float = 1e-5, dtype=torch.float16,
                      recipe: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = encoder_info.to_dict()
    info["actnorm_scales"] = [torch.as_tensor(s, dtype=torch.float32) for s in info["actnorm_scales"]]
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "decoder": {k: v.detach().to("cpu", dtype) for k, v in decoder.state_dict().items()},
        "encoder": info,
        "unbiased": bool(unbiased),
        "eps": float(eps),
        "recipe": dict(recipe or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_decoder_file(path: str | Path, payload: dict | None = None) -> tuple[Decoder, EncoderInfo, dict]:
    """(decoder in fp32, the encoder it needs, the file's other fields); refuses a file that is
    not a decoder file of this project, naming it."""
    payload = safe_load(path) if payload is None else payload
    if not is_decoder_file(payload):
        raise CheckpointError(f"{path}: not a normapps AdaIN decoder file (format {FORMAT!r})")
    if int(payload.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: decoder file version {payload['version']} is newer than "
                              f"this normapps ({VERSION}); upgrade normapps")
    decoder = Decoder()
    state = {k: v.float() for k, v in payload["decoder"].items()}
    try:
        decoder.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: decoder weights do not fit the AdaIN decoder "
                              f"({str(err).splitlines()[0]})") from err
    for name, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: decoder tensor {name!r} holds NaN/inf values")
    info = EncoderInfo.from_dict(dict(payload["encoder"]))
    extra = {k: payload.get(k) for k in ("unbiased", "eps", "recipe")}
    return decoder.eval(), info, extra

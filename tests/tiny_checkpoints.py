"""Tiny but real checkpoints of every task, built in-process in a second or two.

Each is written the way the task writes it (the module's own ``on_save_checkpoint`` fills the
project's metadata; the int8 file goes through ``save_quantized``), so loaders see the real
format. The session fixture ``tiny_checkpoints`` (conftest.py) builds them once per test run.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from normapps.platform.checkpoint import save_module_checkpoint


def classification(path: Path, **kw) -> Path:
    from normapps.tasks.classification import ClassificationModule

    torch.manual_seed(0)
    return save_module_checkpoint(
        ClassificationModule(arch="small_cnn", width=4, in_channels=1, num_classes=10, **kw), path)


def slimming(path: Path) -> Path:
    from normapps.tasks.slimming import SlimmingModule

    torch.manual_seed(0)
    module = SlimmingModule(arch="vgg11", width_mult=0.125, in_channels=1, num_classes=10)
    module.image_size, module.stage = 16, "finetuned"
    return save_module_checkpoint(module, path)


def style_transfer(path: Path) -> Path:
    import warnings

    from normapps.tasks.style_transfer import StyleTransferModule

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-encoder warning
        module = StyleTransferModule(encoder={"weights": "random"}, channels_last=False)
    return save_module_checkpoint(module, path)


def gan(path: Path) -> Path:
    from normapps.tasks.gan import GANModule

    torch.manual_seed(0)
    module = GANModule(g_arch="dcgan", d_arch="dcgan", g_width=8, d_width=8, z_dim=8, image_size=32,
                       channels=1, max_g_steps=10, ema_decay=0.9, grid_size=4, eval_batch_size=8,
                       recal_batches=1)
    return save_module_checkpoint(module, path)


def quantized(path: Path) -> Path:
    from normapps.models import build_classifier
    from normapps.tasks.quantization import ptq
    from normapps.tasks.quantization.artifact import save_quantized

    torch.manual_seed(0)
    arch = {"arch": "small_cnn", "norm": "batch", "num_classes": 10, "in_channels": 1, "width": 4}
    net = build_classifier(arch["arch"], **{k: v for k, v in arch.items() if k != "arch"}).eval()
    example = torch.rand(2, 1, 16, 16)
    int8 = ptq.quantize_fx(net, [example], example=example)
    recipe = {"mode": "ptq", "backend": "fx", "per_channel": True, "qat": False, "folded": False,
              "compile": False}
    return save_quantized(path, state_dict=int8.state_dict(), arch=arch, recipe=recipe, image_size=16)


BUILDERS = {"classification": classification, "slimming": slimming,
            "style_transfer": style_transfer, "gan": gan, "quantization": quantized}


def build_all(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    return {task: build(root / f"{task}.ckpt") for task, build in BUILDERS.items()}


# ------------------------------------------------------------------ damaged and hostile files
class _RunsCode:
    """A pickle payload that would run a shell command when unpickled without weights_only."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def hostile_pickle(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, path)
    return path


def empty_file(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def truncated_copy(src: Path, path: Path) -> Path:
    data = Path(src).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def corrupted_copy(src: Path, path: Path) -> Path:
    """Overwrite the first bytes of every stored tensor with 0xFF (NaN as float32): the zip
    structure stays valid, so the file still loads, as a bit-flipped disk copy would."""
    data = bytearray(Path(src).read_bytes())
    with zipfile.ZipFile(src) as zf:
        records = [i for i in zf.infolist() if "/data/" in i.filename]
    for info in records:
        # Local header: 30 bytes + name + extra field, then the stored (uncompressed) data.
        name_len = int.from_bytes(data[info.header_offset + 26: info.header_offset + 28], "little")
        extra_len = int.from_bytes(data[info.header_offset + 28: info.header_offset + 30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        n = min(info.file_size, 64)
        data[start: start + n] = b"\xff" * n
    path.write_bytes(bytes(data))
    return path


def image(path: Path, size: int = 24, *, channels: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, channels) if channels == 3 else (size, size), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def image_folder(root: Path, n: int = 4, *, size: int = 16, labelled: bool = True) -> Path:
    for i in range(n):
        image((root / str(i % 2) if labelled else root) / f"{i}.png", size, channels=1, seed=i)
    return root

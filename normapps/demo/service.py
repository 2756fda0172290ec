"""One stylization request of the web demo, run through infer.py's own task runner.

The demo writes the request's images into a fresh folder, composes the same config infer.py
composes (``conf/task/infer/style_transfer.yaml`` plus the request's options) and calls the
style-transfer runner: the same validation, the same pipelines (AdaIN/WCT ``Stylizer``, the CIN
pipelines) and the same outputs as ``python infer.py task=style_transfer ...``. Networks are
loaded once per process (``network_cache``), so requests after the first do not re-read
weight files.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from PIL import Image

from normapps.data.image_io import ImageReadError, load_image
from normapps.platform.measure import Duration

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
METHOD_LABELS = {"AdaIN": "adain", "WCT": "wct", "arbitrary CIN": "arbitrary_cin",
                 "26-style CIN": "cin"}
# Pixels an uploaded image may have before the demo refuses it (the reader's own decompression
# bomb limit is far higher); big enough for any camera photo.
MAX_UPLOAD_PIXELS = 40_000_000
MAX_OUTPUT_SIDE = 1536


class RequestError(ValueError):
    """A request the demo refuses; the message is shown in the page."""


@dataclass
class StyleRequest:
    method: str = "adain"
    content: str | Path | None = None
    style: str | Path | None = None
    style2: str | Path | None = None
    style_index: int = 0
    style_index2: int | None = None
    interpolation: float = 0.0  # weight of the second style (no mask)
    mask: str | Path | Image.Image | None = None
    alpha: float = 1.0
    preserve_color: bool = False
    size: int = 512
    extra: dict[str, Any] = field(default_factory=dict)


def _infer_defaults():
    path = ROOT / "conf" / "task" / "infer" / "style_transfer.yaml"
    return OmegaConf.load(path)


def check_upload(path: str | Path | None, what: str) -> Path | None:
    """Read an uploaded image through the project's reader, refusing huge ones; errors name it."""
    if path is None:
        return None
    try:
        img = load_image(path)
    except ImageReadError as err:
        cause = err.__cause__
        why = f"{type(cause).__name__}" if cause is not None else str(err)
        raise RequestError(f"{what} {Path(path).name}: not an image this demo can read ({why})") from err
    if img.width * img.height > MAX_UPLOAD_PIXELS:
        raise RequestError(f"{what}: {img.width}x{img.height} pixels is too large for the demo "
                           f"(at most {MAX_UPLOAD_PIXELS // 1_000_000} megapixels); use infer.py, "
                           f"which tiles large images")
    return Path(path)


class StyleService:
    """Runs ``StyleRequest``s through the style-transfer infer runner, one at a time."""

    def __init__(self, *, ckpt: str | None = None, device: str = "auto", precision: str = "auto") -> None:
        from normapps.platform.inference import resolve_device

        # Import the runners here, in the thread that builds the service: Gradio serves each
        # event in its own worker thread, and two threads importing the style-transfer package
        # at once can see a partially initialized module (a demo test caught it, 1 run in 15).
        import normapps.tasks.style_transfer.bundled_styles  # noqa: F401
        import normapps.tasks.style_transfer.infer  # noqa: F401

        self.ckpt = ckpt
        self.device = resolve_device(device)
        self.precision = precision
        self.ckpt_method = None
        if ckpt:
            from normapps.tasks.style_transfer.cin_infer import checkpoint_method

            self.ckpt_method, _ = checkpoint_method(ckpt)

    def config(self, req: StyleRequest, workdir: Path):
        method = req.method
        if method not in METHOD_LABELS.values():
            raise RequestError(f"unknown method {method!r}")
        size = int(req.size)
        if not 64 <= size <= MAX_OUTPUT_SIDE:
            raise RequestError(f"output size {size} must be between 64 and {MAX_OUTPUT_SIDE}")
        content = check_upload(req.content, "content image")
        if content is None:
            raise RequestError("content image: upload a photo or pick a bundled one")
        over: dict[str, Any] = {"content": str(content), "content_size": size, "style_size": size,
                                "alpha": float(req.alpha), "preserve_color": bool(req.preserve_color),
                                "method": method, "precision": self.precision, "batch_size": 1,
                                "ckpt_path": None, "tile_size": 0}
        if self.ckpt and self.ckpt_method in (method, "adain" if method == "wct" else None):
            over["ckpt_path"] = str(self.ckpt)
        two = False
        if method == "cin":
            idx = [int(req.style_index)]
            if req.style_index2 is not None:
                idx.append(int(req.style_index2))
            two = len(idx) == 2
            over["style_index"] = idx
        else:
            style = check_upload(req.style, "style image")
            if style is None:
                raise RequestError("style image: upload a painting or pick a bundled style")
            styles = [str(style)]
            style2 = check_upload(req.style2, "second style image")
            if style2 is not None:
                styles.append(str(style2))
            two = len(styles) == 2
            over["style"] = styles
        if req.mask is not None:
            if not two:
                raise RequestError("a mask needs two styles: pick a second style")
            mask_path = workdir / "mask.png"
            mask = req.mask if isinstance(req.mask, Image.Image) else load_image(check_upload(req.mask, "mask"))
            mask.convert("L").save(mask_path)
            over["mask"] = str(mask_path)
        elif two:
            w = float(req.interpolation)
            if not 0.0 <= w <= 1.0:
                raise RequestError(f"interpolation {w} must be in [0, 1]")
            over["style_weights"] = [1.0 - w, w] if 0 < w < 1 else ([1.0, 0.0] if w == 0 else [0.0, 1.0])
        over.update(req.extra)
        cfg = OmegaConf.merge(_infer_defaults(), {"output_dir": str(workdir / "out"), "seed": 0,
                                                  "device": str(self.device)}, over)
        return cfg

    def run(self, req: StyleRequest) -> tuple[Image.Image, dict[str, Any]]:
        from normapps.tasks.style_transfer.infer import run as infer_run

        with tempfile.TemporaryDirectory(prefix="normapps_demo_") as tmp:
            workdir = Path(tmp)
            cfg = self.config(req, workdir)
            run_time = Duration.started(device=self.device)
            try:
                with torch.no_grad():
                    result = infer_run(cfg, device=self.device, output_dir=workdir / "out")
            except (ValueError, FileNotFoundError, ImageReadError) as err:
                raise RequestError(str(err)) from err
            seconds = run_time.stop()
            if not result.get("outputs"):
                raise RequestError("nothing was stylized (unreadable content image?)")
            image = Image.open(result["outputs"][0]).convert("RGB")
            image.load()
        info = {"method": result.get("method"), "weights": result.get("weights") or result.get("network"),
                "device": self.device.type, "precision": result.get("precision"),
                "seconds": round(seconds, 2), "size": list(image.size)}
        return image, info

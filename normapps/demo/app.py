"""The Gradio page: pick or upload a content photo and a style, choose the method and options,
press Stylize. Every request goes through ``StyleService`` (infer.py's runner), one at a time
(the queue), and a refused request shows its message in the page while the server keeps
serving."""
from __future__ import annotations

import logging
import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from normapps.demo.service import METHOD_LABELS, RequestError, StyleRequest, StyleService

log = logging.getLogger(__name__)

BUNDLED_CONTENTS = ("coffee", "rocket", "astronaut", "chelsea", "motorcycle", "china")
BUNDLED_STYLES = ("painting: style 7", "painting: style 19", "brick", "grass", "gravel",
                  "immunohistochemistry", "colorwheel", "hubble_deep_field")
NONE = "(none)"


@lru_cache(maxsize=1)
def _bundle_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="normapps_demo_bundled_"))


def bundled_file(name: str) -> Path:
    """A bundled picture written once to a PNG the infer runner can read."""
    path = _bundle_dir() / f"{name.replace(':', '').replace(' ', '_')}.png"
    if not path.exists():
        if name.startswith("painting: style "):
            from normapps.tasks.style_transfer.bundled_styles import _cin26_renders

            k = int(name.rsplit(" ", 1)[1])
            img = _cin26_renders(("flower",), (k,), 320)[0]
        else:
            from normapps.data.bundled import bundled_image

            img = bundled_image(name)
        img.save(path)
    return path


def mask_from_sketch(value) -> Image.Image | None:
    """The drawn strokes of a Sketchpad/ImageEditor value as a white-on-black mask."""
    if not value:
        return None
    layers = value.get("layers") if isinstance(value, dict) else None
    comp = value.get("composite") if isinstance(value, dict) else value
    arr = None
    for layer in layers or []:
        a = np.asarray(layer)
        if a.ndim == 3 and a.shape[-1] == 4:
            alpha = a[..., 3] > 0
            arr = alpha if arr is None else (arr | alpha)
    if arr is None and comp is not None:
        a = np.asarray(comp)
        if a.ndim == 3 and a.shape[-1] == 4:
            arr = a[..., 3] > 0
    if arr is None or not arr.any():
        return None
    return Image.fromarray((arr * 255).astype(np.uint8), mode="L")


def build_app(service: StyleService):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    def stylize(method, content_file, content_pick, style_file, style_pick, style_index,
                style2_file, style2_pick, style_index2, interpolation, mask_file, mask_sketch,
                alpha, preserve_color, size):
        try:
            content = content_file or (bundled_file(content_pick) if content_pick else None)
            style = style_file or (bundled_file(style_pick) if style_pick else None)
            style2 = style2_file or (bundled_file(style2_pick) if style2_pick and style2_pick != NONE else None)
            mask = mask_file or mask_from_sketch(mask_sketch)
            req = StyleRequest(method=METHOD_LABELS.get(method, method), content=content, style=style,
                               style2=style2, style_index=int(style_index),
                               style_index2=None if style_index2 in (None, NONE) else int(style_index2),
                               interpolation=float(interpolation), mask=mask, alpha=float(alpha),
                               preserve_color=bool(preserve_color), size=int(size))
            image, info = service.run(req)
        except RequestError as err:
            return None, f"**Refused:** {err}"
        except Exception as err:  # keep serving; say what happened
            log.exception("demo request failed")
            return None, f"**Failed:** {type(err).__name__}: {err}"
        text = (f"**{method}** in {info['seconds']:.2f} s on {info['device']} ({info['precision']}), "
                f"{info['size'][0]}x{info['size'][1]} px. Weights: {info['weights']}")
        return image, text

    def preview(file, pick):
        path = file or (bundled_file(pick) if pick and pick != NONE else None)
        if path is None:
            return None
        try:
            from normapps.data.image_io import load_image

            img = load_image(path)
            img.thumbnail((320, 320))
            return img
        except Exception:
            return None

    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])
    with gr.Blocks(title="normapps style transfer", theme=theme, analytics_enabled=False) as demo:
        gr.Markdown("## normapps style transfer\nAdaIN and WCT (VGG encoder + trained decoder), "
                    "arbitrary CIN (Magenta's style prediction) and the 26-style CIN network, "
                    "running locally with packaged weights.")
        with gr.Row():
            with gr.Column():
                gr.Markdown("### Content")
                content_file = gr.File(label="Upload a photo", file_types=["image"], type="filepath",
                                       elem_id="content-upload")
                content_pick = gr.Dropdown(list(BUNDLED_CONTENTS), value=BUNDLED_CONTENTS[0],
                                           label="...or a bundled photo", elem_id="content-pick")
                content_view = gr.Image(label="Content", interactive=False, height=220)
            with gr.Column():
                gr.Markdown("### Style")
                style_file = gr.File(label="Upload a style image", file_types=["image"], type="filepath",
                                     elem_id="style-upload")
                style_pick = gr.Dropdown(list(BUNDLED_STYLES), value=BUNDLED_STYLES[0],
                                         label="...or a bundled style", elem_id="style-pick")
                style_view = gr.Image(label="Style", interactive=False, height=220)
                style_index = gr.Slider(0, 25, value=7, step=1, label="26-style CIN: style index")
                with gr.Accordion("Two styles: interpolation or a mask", open=False):
                    style2_file = gr.File(label="Second style image", file_types=["image"], type="filepath")
                    style2_pick = gr.Dropdown([NONE, *BUNDLED_STYLES], value=NONE, label="...or a bundled second style")
                    style_index2 = gr.Dropdown([NONE, *map(str, range(26))], value=NONE,
                                               label="26-style CIN: second style index")
                    interpolation = gr.Slider(0, 1, value=0.5, step=0.05, label="Weight of the second style")
                    mask_file = gr.File(label="Mask image (white: first style)", file_types=["image"],
                                        type="filepath")
                    mask_sketch = gr.Sketchpad(label="...or draw the first style's region", type="numpy",
                                               image_mode="RGBA")
            with gr.Column():
                gr.Markdown("### Result")
                method = gr.Radio(list(METHOD_LABELS), value="AdaIN", label="Method", elem_id="method")
                alpha = gr.Slider(0, 1, value=1.0, step=0.05, label="Style strength (alpha)")
                preserve_color = gr.Checkbox(value=False, label="Keep the content's colours")
                size = gr.Slider(128, 1024, value=512, step=32, label="Output size (shorter side, px)",
                                 elem_id="size")
                button = gr.Button("Stylize", variant="primary", elem_id="stylize")
                output = gr.Image(label="Stylized", format="png", interactive=False, elem_id="result",
                                  buttons=["download"])
                info = gr.Markdown(elem_id="info")
        content_file.change(preview, [content_file, content_pick], content_view)
        content_pick.change(preview, [content_file, content_pick], content_view)
        style_file.change(preview, [style_file, style_pick], style_view)
        style_pick.change(preview, [style_file, style_pick], style_view)
        demo.load(preview, [content_file, content_pick], content_view)
        demo.load(preview, [style_file, style_pick], style_view)
        button.click(stylize, [method, content_file, content_pick, style_file, style_pick, style_index,
                               style2_file, style2_pick, style_index2, interpolation, mask_file,
                               mask_sketch, alpha, preserve_color, size], [output, info])
    # One request at a time: a second one waits in the queue instead of doubling peak memory.
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo

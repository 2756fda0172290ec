"""FID / KID / IS through torchmetrics, on InceptionV3 from a local file or, offline, on a
feature network the project trains on the same real data.

The fallback's numbers are logged as ``fid_local`` / ``kid_local`` / ``is_local``: they rank
models trained on the same data against each other, and are not comparable with published FID.
Features are extracted once per batch and fed to the three metrics through an identity
"feature extractor", so the network runs once instead of three times.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from normapps.platform.checkpoint import CheckpointError, safe_load

log = logging.getLogger(__name__)


class LocalFeatureNet(nn.Module):
    """Small CNN for [0, 1] images: ``forward`` returns (features (N, 128), logits (N, K))."""

    num_features = 128

    def __init__(self, *, channels: int, num_outputs: int) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                    nn.MaxPool2d(2)]

        # Small on purpose: it is trained on CPU before the first evaluation of every new
        # dataset (then cached), and only has to rank generators trained on that data.
        self.body = nn.Sequential(*stage(channels, 32), *stage(32, 64), *stage(64, 128),
                                  nn.Conv2d(128, 128, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(128, num_outputs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.body(x * 2 - 1)
        return f, self.head(f)


def _rotations(x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Self-supervised targets for unlabelled data: each image rotated by k*90 degrees."""
    k = torch.randint(0, 4, (x.shape[0],), generator=generator)
    out = x.clone()
    for r in range(1, 4):  # four rotations, each applied to its whole sub-batch at once
        mask = k == r
        if mask.any():
            out[mask] = torch.rot90(x[mask], r, dims=(2, 3))
    return out, k


def train_local_feature_net(images: torch.Tensor, labels: torch.Tensor | None, *, steps: int,
                            seed: int, batch_size: int = 64, lr: float = 1e-3) -> LocalFeatureNet:
    """Train on the real images: class labels when there are any, else rotation prediction.

    Deterministic in ``seed`` without touching the caller's random stream: the initial weights
    are drawn inside ``torch.random.fork_rng`` (the global state is restored afterwards), the
    batches from a local generator. Reseeding the global generator here made every run after a
    cold cache draw its latents, labels and penalty noise from this seed, whatever its own.
    """
    g = torch.Generator().manual_seed(seed)
    supervised = labels is not None and int(labels.max()) > 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = LocalFeatureNet(channels=images.shape[1],
                              num_outputs=int(labels.max()) + 1 if supervised else 4)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, len(images), (min(batch_size, len(images)),), generator=g)
        x = images[idx]
        if supervised:
            y = labels[idx]
        else:
            x, y = _rotations(x, g)
        # Small random shifts make the features less sensitive to exact pixel positions.
        dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        loss = F.cross_entropy(net(x)[1], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    net.supervised = supervised
    return net


def data_fingerprint(images: torch.Tensor) -> str:
    """Cheap content hash so a cached network is only reused for the same real data."""
    sample = images[:: max(len(images) // 64, 1)].float().mul(255).round().to(torch.uint8)
    h = hashlib.sha1(sample.numpy().tobytes())
    h.update(str(tuple(images.shape)).encode())
    return h.hexdigest()[:12]


def get_local_feature_net(images: torch.Tensor, labels: torch.Tensor | None, *, steps: int, seed: int,
                          cache_dir: str | Path | None) -> LocalFeatureNet:
    """Load the cached network for these images, or train it (and cache it)."""
    key = f"gan_local_features_{data_fingerprint(images)}_s{steps}_seed{seed}.pt"
    path = Path(cache_dir) / key if cache_dir else None
    supervised = labels is not None and int(labels.max()) > 0
    if path is not None and path.is_file():
        state = safe_load(path)
        net = LocalFeatureNet(channels=images.shape[1], num_outputs=state["head.weight"].shape[0])
        net.load_state_dict(state)
        net.eval()
        net.supervised = supervised
        log.info("local feature network loaded from %s", path)
        return net
    log.info("training the local feature network (%d steps) for fid_local/kid_local", steps)
    net = train_local_feature_net(images, labels, steps=steps, seed=seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # concurrent runs never share a temp file
        torch.save(net.state_dict(), tmp)
        tmp.replace(path)
    return net


def feature_net_sha256(net: nn.Module) -> str:
    """SHA-256 over the feature network's state (names, shapes, dtypes, values): fid_local
    values are comparable only between runs whose networks share this hash."""
    h = hashlib.sha256()
    for name, t in net.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        flat = t.detach().cpu().contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()


@torch.no_grad()
def extract_features(net: nn.Module, images: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """The FID features of [0, 1] images, in batches, on the network's device."""
    device = next(net.parameters()).device
    return torch.cat([net(images[i:i + batch_size].to(device).float())[0].float().cpu()
                      for i in range(0, len(images), batch_size)])


def fid_reference_statistics(net: nn.Module, images: torch.Tensor, *, cache_dir: str | Path | None,
                             batch_size: int = 256) -> tuple[dict[str, np.ndarray], dict]:
    """FID statistics (mu, sigma) of all ``images`` under ``net``, computed by torch-fidelity
    (``fid_features_to_statistics``) once per (data, network) and cached.

    The cache key follows torch-fidelity's naming (``<input>-<extractor>-stat-fid-<layer>``);
    the file holds plain float64 tensors read back with weights_only=True, because
    torch-fidelity's own cache reader unpickles with weights_only=False."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    net_hash = feature_net_sha256(net)[:16]
    name = f"{data_fingerprint(images)}-n{len(images)}-{type(net).__name__}-{net_hash}-stat-fid-{net.num_features}"
    path = Path(cache_dir) / f"{name}.pt" if cache_dir else None
    info = {"num_images": int(len(images)), "cache_file": str(path) if path else None, "cached": False,
            "feature_net_sha256": feature_net_sha256(net)}
    if path is not None and path.is_file():
        state = safe_load(path)
        info["cached"] = True
        return {"mu": state["mu"].numpy(), "sigma": state["sigma"].numpy()}, info
    stats = fid_features_to_statistics(extract_features(net, images, batch_size=batch_size).double())
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # processes of one DDP run write side by side
        torch.save({"mu": torch.from_numpy(stats["mu"]), "sigma": torch.from_numpy(stats["sigma"])}, tmp)
        tmp.replace(path)
    return stats, info


def load_fid_statistics(path: str | Path, *, num_features: int) -> dict[str, np.ndarray]:
    """A user's precomputed FID statistics: an ``.npz`` with ``mu`` (D,) and ``sigma`` (D, D),
    the format of TTUR and pytorch-fid (read without pickles)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"gan.fid_stats: no such file {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            mu, sigma = np.asarray(data["mu"], dtype=np.float64), np.asarray(data["sigma"], dtype=np.float64)
    except (KeyError, ValueError, OSError) as err:
        raise ValueError(f"gan.fid_stats: {path} is not an .npz with arrays 'mu' and 'sigma' ({err})") from err
    if mu.shape != (num_features,) or sigma.shape != (num_features, num_features):
        raise ValueError(f"gan.fid_stats: {path} holds statistics of {mu.shape[0] if mu.ndim else '?'}-d "
                         f"features, but the feature network gives {num_features}")
    return {"mu": mu, "sigma": sigma}


class _Precomputed(nn.Identity):
    """Lets torchmetrics take already-extracted features as its "images"."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features


class InceptionFeatures(nn.Module):
    """torch-fidelity's FID InceptionV3 from a local weights file; [0, 1] floats in,
    (pool3 features (N, 2048), unbiased logits (N, 1008)) out."""

    num_features = 2048

    def __init__(self, weights_path: str | Path) -> None:
        super().__init__()
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"gan.metrics.inception_weights: no such file {path}")
        try:
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError as err:
            raise ModuleNotFoundError(
                "gan.metrics.inception_weights needs torch-fidelity (pip install torch-fidelity); "
                "without it leave gan.metrics.inception_weights unset to use fid_local") from err
        # Read the file once, as plain tensors (weights_only=True), and hand those tensors over.
        # torch-fidelity's constructor torch.load()s whatever it is given with weights_only=False,
        # so it gets an in-memory copy we serialized from the vetted tensors, never the file:
        # a file swapped after the check is not read again.
        state = safe_load(path)
        if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
            raise CheckpointError(f"gan.metrics.inception_weights: {path} is not a state dict of tensors")
        buffer = io.BytesIO()
        torch.save({k: v.detach().clone() for k, v in state.items()}, buffer)
        buffer.seek(0)
        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=buffer)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # torchmetrics' forward keeps only the first feature; the torch-fidelity pass gives both.
        feats, logits = self.net._torch_fidelity_forward((x.clamp(0, 1) * 255).to(torch.uint8))
        return feats.reshape(len(x), -1), logits.reshape(len(x), -1)


class GANMetrics:
    """FID, KID and (when the network has class logits) IS for [0, 1] images.

    Real features are kept across evaluations (computed once); fake ones reset each time.
    """

    def __init__(self, extractor: nn.Module, *, suffix: str, with_is: bool, kid_subset_size: int = 1000,
                 kid_subsets: int = 50, reference_stats: dict[str, np.ndarray] | None = None,
                 intra_fid_classes: int = 0) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.inception import InceptionScore
        from torchmetrics.image.kid import KernelInceptionDistance

        self.extractor = extractor.eval()
        for p in self.extractor.parameters():
            p.requires_grad_(False)
        self.suffix = suffix
        n = extractor.num_features
        self.fid = FrechetInceptionDistance(feature=_Precomputed(n), reset_real_features=False)
        self.kid = KernelInceptionDistance(feature=_Precomputed(n), reset_real_features=False,
                                           subset_size=kid_subset_size, subsets=kid_subsets)
        self.is_ = InceptionScore(feature=nn.Identity(), splits=10) if with_is else None
        self.kid_subset_size = kid_subset_size
        # FID against fixed (mu, sigma) (e.g. of the whole training set) instead of the real
        # features seen; KID still uses those.
        self.reference_stats = reference_stats
        # Conditional models: FID per class on the same features (labels passed to update()).
        self.intra = IntraClassFID(num_classes=intra_fid_classes, num_features=n) if intra_fid_classes else None
        self.num_real = 0
        self.num_fake = 0

    def to(self, device) -> "GANMetrics":
        for m in (self.extractor, self.fid, self.kid, self.is_, self.intra):
            if m is not None:
                m.to(device)
        return self

    @torch.no_grad()
    def _features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, logits = self.extractor(images.float())
        return feats.float(), logits.float()

    def update(self, images: torch.Tensor, *, real: bool, labels: torch.Tensor | None = None) -> None:
        feats, logits = self._features(images)
        self.fid.update(feats, real=real)
        self.kid.update(feats, real=real)
        if self.intra is not None:
            if labels is None:
                raise ValueError("intra-class FID needs the images' labels")
            self.intra.update(feats, labels.to(feats.device), real=real)
        if real:
            self.num_real += len(images)
        else:
            self.num_fake += len(images)
            if self.is_ is not None:
                self.is_.update(logits)

    def _fid_against_reference(self) -> float:
        from torch_fidelity.metric_fid import fid_statistics_to_metric

        fid = self.fid
        with fid.sync_context():  # the fake feature moments summed over processes
            n = fid.fake_features_num_samples.double()
            mean = fid.fake_features_sum.double() / n
            cov = (fid.fake_features_cov_sum.double() - n * torch.outer(mean, mean)) / (n - 1)
        fake = {"mu": mean.cpu().numpy(), "sigma": cov.cpu().numpy()}
        return float(fid_statistics_to_metric(self.reference_stats, fake, verbose=False)
                     ["frechet_inception_distance"])

    def compute(self) -> dict[str, float]:
        fid = self._fid_against_reference() if self.reference_stats is not None else float(self.fid.compute())
        out = {f"fid{self.suffix}": fid}
        self.kid.subset_size = max(2, min(self.kid_subset_size, self.num_real, self.num_fake))
        kid_mean, _ = self.kid.compute()
        out[f"kid{self.suffix}"] = float(kid_mean)
        if self.is_ is not None:
            out[f"is{self.suffix}"] = float(self.is_.compute()[0])
        if self.intra is not None:
            out[f"intra_fid{self.suffix}"] = self.intra.compute()
        return out

    def reset_fake(self) -> None:
        # reset_real_features=False keeps the real statistics through reset().
        self.fid.reset()
        self.kid.reset()
        if self.is_ is not None:
            self.is_.reset()
        if self.intra is not None:
            self.intra.reset_fake()
        self.num_fake = 0


class IntraClassFID:
    """Intra-class FID (Miyato & Koyama 2018): the FID between the generated and the real
    images of each class, averaged over classes. One torchmetrics FID per class on already
    extracted features; real statistics are kept across evaluations."""

    def __init__(self, *, num_classes: int, num_features: int) -> None:
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.fids = [FrechetInceptionDistance(feature=_Precomputed(num_features), reset_real_features=False)
                     for _ in range(num_classes)]

    def to(self, device) -> "IntraClassFID":
        for m in self.fids:
            m.to(device)
        return self

    def update(self, feats: torch.Tensor, labels: torch.Tensor, *, real: bool) -> None:
        for c in labels.unique().tolist():
            self.fids[c].update(feats[labels == c], real=real)

    def per_class(self) -> list[float]:
        """FID per class; nan for a class with fewer than 2 real or generated images."""
        return [float(m.compute()) if min(int(m.real_features_num_samples), int(m.fake_features_num_samples)) >= 2
                else math.nan for m in self.fids]

    def compute(self) -> float:
        values = [v for v in self.per_class() if not math.isnan(v)]
        if not values:
            raise ValueError("intra-class FID needs at least 2 real and 2 generated images of some class")
        return float(np.mean(values))

    def reset_fake(self) -> None:
        for m in self.fids:
            m.reset()

"""Self-reenactment evaluation: metrics, the metric protocol and the protocol runner.

Follows Zakharov et al. 2019, section 4 ("Datasets", "Metrics", "Methods"): for every held-out
video, a talking-head model is built from K frames ("shots") of one part of the video, feed-forward
(FF: the embedder's average, no training) or fine-tuned (FT: the few-shot fine-tuning of section
3.4), and then asked to reproduce frames of another part of the same video that it never saw, from
their landmarks alone. Generated frames are compared with the real ones by

* FID (Heusel et al. 2017) between the sets of generated and real frames (realism),
* SSIM (Wang et al. 2004) and PSNR between each generated frame and its real frame (fidelity),
* CSIM: cosine similarity of face-recognition embeddings (identity preservation), by two networks
  whose column headers name them: ``csim-dlib`` "CSIM (dlib)", dlib's face ResNet on the generated
  frame and its real target (computed by default: the network comes with the install), and ``csim``
  "CSIM (ArcFace)", the paper's ArcFace on the generated frame and the source shot (needs its
  weights imported),
* landmark error: a landmark detector run on the generated frame against the target's landmarks,
  normalised by the inter-ocular distance (pose and expression).

Each metric is a component registered through the ``register_metrics`` hook (third parties add
their own) and follows :class:`Metric`. A metric whose weights are missing is reported as not
computed with the command that fixes it; the others still run.

The run is deterministic for a given seed: shots and targets of a video are drawn from a generator
seeded by ``(seed, crc32(video id), K)``, independent of the order and number of videos.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import HeadpuppetError, WeightsMissingError
from .progress import NULL, Reporter

#: order of the columns in the paper's table, then the extras
PAPER_METRICS = ("fid", "ssim", "csim", "csim-dlib", "landmark-error")
DEFAULT_SHOTS = (1, 8, 32)
#: headers of the first-party metrics, used for a metric whose factory failed (no object to ask)
KNOWN_LABELS = {"fid": ("FID", False), "ssim": ("SSIM", True), "psnr": ("PSNR", True),
                "csim": ("CSIM (ArcFace)", True), "csim-dlib": ("CSIM (dlib)", True),
                "landmark-error": ("LMK-err", False)}
EVAL_FORMAT = "headpuppet-evaluation"
EVAL_VERSION = 1


# --------------------------------------------------------------------------------------------
# Metric math (numpy / torch, no plugins)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, win_size: int = 7) -> np.ndarray:
    """Structural similarity of each image pair, as scikit-image's ``structural_similarity`` with
    its defaults (7x7 uniform window, sample covariance, K1=0.01, K2=0.03, mean over the valid
    area and the channels). ``a``, ``b``: ``(B, H, W, 3)`` or ``(H, W, 3)`` -> ``(B,)`` float64."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ {a.shape} vs {b.shape}")
    if a.ndim == 3:
        a, b = a[None], b[None]
    x = np.ascontiguousarray(a.transpose(0, 3, 1, 2), dtype=np.float64)  # (B, C, H, W): filter contiguous planes
    y = np.ascontiguousarray(b.transpose(0, 3, 1, 2), dtype=np.float64)
    w = win_size

    pad = (w - 1) // 2

    def mean(t):
        # skimage's filter: uniform over the window, reflected at the border, which is cropped after
        from scipy.ndimage import uniform_filter

        out = np.empty_like(t)
        for i in np.ndindex(t.shape[:2]):
            uniform_filter(t[i], size=w, mode="reflect", output=out[i])
        return out[..., pad:-pad or None, pad:-pad or None]

    ux, uy = mean(x), mean(y)
    n = win_size * win_size
    cov_norm = n / (n - 1)  # sample covariance
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(axis=(1, 2, 3))


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """Peak signal-to-noise ratio in dB of each pair (as ``skimage.metrics.peak_signal_noise_ratio``);
    ``(B, H, W, C)`` -> ``(B,)``; identical images give ``inf``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim == 3:
        a, b = a[None], b[None]
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(data_range ** 2 / mse)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrt(sigma1 sigma2))``.

    ``tr(sqrt(sigma1 sigma2))`` is computed as the sum of the square roots of the eigenvalues of
    the symmetric ``sqrt(sigma1) sigma2 sqrt(sigma1)`` (same spectrum), with two symmetric
    eigendecompositions: the same value as pytorch-fid's ``scipy.linalg.sqrtm`` route up to rounding,
    about ten times faster at 2048 dimensions, and well defined for singular covariances (fewer
    frames than dimensions), where tiny negative eigenvalues from rounding are clipped to zero.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    diff = mu1 - mu2
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T  # sqrt(sigma1), symmetric PSD
    m = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, D)`` -> mean ``(D,)`` and sample covariance ``(D, D)``."""
    f = np.asarray(features, np.float64)
    return f.mean(0), np.cov(f, rowvar=False)


def interocular(points: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners (iBUG points 36 and 45): ``(..., 68, 2)`` -> ``(...)``."""
    p = np.asarray(points, np.float64)
    return np.linalg.norm(p[..., 36, :] - p[..., 45, :], axis=-1)


def landmark_error(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Mean point-to-point distance normalised by the reference's inter-ocular distance.
    ``(..., 68, 2)`` pairs -> ``(...)``."""
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    return np.linalg.norm(pred - ref, axis=-1).mean(-1) / np.maximum(interocular(ref), 1e-6)


# --------------------------------------------------------------------------------------------
# The metric protocol


@dataclass
class MetricBatch:
    """What a metric sees for a batch of generated frames.

    Attributes:
        fake: ``(B, S, S, 3) uint8`` generated frames.
        real: ``(B, S, S, 3) uint8`` the real target frames they should reproduce.
        real_points: ``(B, 68, 2) float32`` the targets' landmarks (crop pixels).
        source: ``(B, S, S, 3) uint8`` the source shot each frame was made from (identity reference).
        source_points: ``(B, 68, 2) float32`` its landmarks.
        detector: a :class:`headpuppet.protocols.LandmarkDetector` for metrics that detect on the
            generated frames, or ``None`` when no detector is available.
        real_keys / source_keys: hashable ids of the real / source frames (video id, frame index),
            so metrics can cache what they compute on real frames across methods.
    """

    fake: np.ndarray
    real: np.ndarray
    real_points: np.ndarray
    source: np.ndarray
    source_points: np.ndarray
    detector: Any = None
    real_keys: list | None = None
    source_keys: list | None = None


@dataclass
class MetricValue:
    """A metric's result over a set of frames: ``value`` is None when it could not be computed
    (``note`` says why); ``count`` frames went into it; ``failed`` frames could not be scored."""

    value: float | None
    count: int
    failed: int = 0
    note: str = ""


@runtime_checkable
class Metric(Protocol):
    """One evaluation metric (what a ``register_metrics`` factory returns).

    Attributes:
        name: the registered name.
        label: the column header (``"SSIM"``).
        higher_is_better: the direction of improvement (shown as an arrow).
        kind: ``"paired"`` (averaged over frame pairs) or ``"set"`` (compares whole sets, like FID).

    ``reset()`` starts a new set (one table cell); ``update(batch: MetricBatch)`` adds a batch;
    ``compute() -> MetricValue`` summarises the set.
    """

    name: str
    label: str
    higher_is_better: bool

    def reset(self) -> None: ...

    def update(self, batch: MetricBatch) -> None: ...

    def compute(self) -> MetricValue: ...


class _PairedMetric:
    """Mean over frames of a per-frame score."""

    name = label = ""
    higher_is_better = True
    kind = "paired"

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._values: list[float] = []
        self._failed = 0

    def scores(self, batch: MetricBatch) -> np.ndarray:
        raise NotImplementedError

    def update(self, batch: MetricBatch) -> None:
        s = np.asarray(self.scores(batch), np.float64)
        ok = ~np.isnan(s)
        self._failed += int((~ok).sum())
        self._values.extend(s[ok].tolist())

    def compute(self) -> MetricValue:
        if not self._values:
            return MetricValue(None, 0, self._failed, "no frame could be scored" if self._failed else "no frames")
        v = np.asarray(self._values)
        finite = v[np.isfinite(v)]
        # PSNR of an identical pair is inf; average the finite ones and say how many were perfect
        note = f"{len(v) - len(finite)} identical frames (inf) left out" if len(finite) < len(v) else ""
        value = float(finite.mean()) if len(finite) else math.inf
        return MetricValue(value, len(v), self._failed, note)


class SSIMMetric(_PairedMetric):
    name, label, higher_is_better = "ssim", "SSIM", True

    def scores(self, batch):
        return ssim(batch.fake, batch.real)


class PSNRMetric(_PairedMetric):
    name, label, higher_is_better = "psnr", "PSNR", True

    def scores(self, batch):
        return psnr(batch.fake, batch.real)


class LandmarkErrorMetric(_PairedMetric):
    """The detector on each generated frame vs the target's landmarks, / inter-ocular distance.
    A frame where the detector finds no face counts as failed (reported beside the value)."""

    name, label, higher_is_better = "landmark-error", "LMK-err", False

    def __init__(self, detector=None):
        self.detector = detector
        super().__init__()

    def scores(self, batch):
        detector = self.detector or batch.detector
        if detector is None:
            raise HeadpuppetError("landmark-error needs a landmark detector; pass --detector NAME "
                                  "(see `headpuppet plugins`)")
        out = np.full(len(batch.fake), np.nan)
        for i, frame in enumerate(batch.fake):
            if hasattr(detector, "reset"):
                detector.reset()  # generated frames are independent images: no tracking across them
            faces = detector.detect(np.ascontiguousarray(frame))
            if faces:
                out[i] = landmark_error(faces[0].points, batch.real_points[i])
        return out


class _FeatureCache:
    """Features of real / source frames keyed by (video, frame), reused across table cells."""

    def __init__(self):
        self.store: dict = {}

    def get(self, keys, images, fn):
        if keys is None:
            return fn(images)
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        if missing:
            feats = fn(images[missing])
            for i, f in zip(missing, feats):
                self.store[keys[i]] = f
        return np.stack([self.store[k] for k in keys])


class FIDMetric:
    """Frechet Inception Distance between the generated and the real target frames of a cell.

    Args:
        net: an ``nn.Module`` mapping ``(B, 3, H, W)`` in [-1, 1] to ``(B, D)`` pool features
            (:class:`headpuppet.nets.inception.FIDInceptionV3` with pytorch-fid's weights).
        device: where the network runs.
        batch_size: frames per forward pass.
    """

    name, label, higher_is_better, kind = "fid", "FID", False, "set"

    def __init__(self, net, device="cpu", batch_size: int = 16):
        self.net, self.device, self.batch_size = net, device, batch_size
        self._cache = _FeatureCache()
        self.reset()

    def reset(self) -> None:
        self._fake: list[np.ndarray] = []
        self._real: list[np.ndarray] = []

    def features(self, images: np.ndarray) -> np.ndarray:
        import torch

        from .media.imaging import to_tensor

        out = []
        with torch.no_grad():
            for i in range(0, len(images), self.batch_size):
                x = to_tensor(np.ascontiguousarray(images[i:i + self.batch_size])).to(self.device)  # (b, 3, S, S)
                out.append(self.net(x).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))

    def update(self, batch: MetricBatch) -> None:
        self._fake.append(self.features(batch.fake))
        self._real.append(self._cache.get(batch.real_keys, batch.real, self.features))

    def compute(self) -> MetricValue:
        n = sum(len(f) for f in self._fake)
        if n < 2:
            return MetricValue(None, n, 0, "FID needs at least 2 frames")
        f = np.concatenate(self._fake)
        r = np.concatenate(self._real)
        note = f"only {n} frames: FID is biased upwards below ~2048 (compare like with like)" if n < 2048 else ""
        return MetricValue(frechet_distance(*feature_statistics(f), *feature_statistics(r)), n, 0, note)


class CSIMMetric(_PairedMetric):
    """Cosine similarity of face-recognition embeddings of each generated frame and its source
    shot, both aligned to the network's template from landmarks (the target's for the generated
    frame, which it is meant to follow; the source's for the source).

    Args:
        net: ``(B, 3, 112, 112)`` aligned faces in [-1, 1] -> ``(B, D)`` embeddings (ArcFace).
    """

    name, label, higher_is_better = "csim", "CSIM (ArcFace)", True

    def __init__(self, net, device="cpu", batch_size: int = 16, input_size: int = 112):
        self.net, self.device, self.batch_size, self.input_size = net, device, batch_size, input_size
        self._cache = _FeatureCache()
        super().__init__()

    def embed(self, images: np.ndarray, points: np.ndarray) -> np.ndarray:
        import torch

        from .media.imaging import to_tensor
        from .nets.facerec import align_faces

        faces = align_faces(images, points, self.input_size)  # (B, 112, 112, 3)
        out = []
        with torch.no_grad():
            for i in range(0, len(faces), self.batch_size):
                x = to_tensor(faces[i:i + self.batch_size]).to(self.device)
                out.append(self.net(x).double().cpu().numpy())
        e = np.concatenate(out)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    def scores(self, batch):
        fake = self.embed(batch.fake, batch.real_points)
        src = self._cache.get(batch.source_keys, np.arange(len(batch.source)),
                              lambda idx: self.embed(batch.source[idx], batch.source_points[idx]))
        return (fake * src).sum(1)


class DlibCSIMMetric(_PairedMetric):
    """CSIM with dlib's face-recognition ResNet (:mod:`headpuppet.nets.dlib_resnet`): the cosine
    similarity of the 128-d descriptors of each generated frame and its real target, both cut into
    dlib's aligned 150x150 chip (``get_face_chip_details(shape, 150, 0.25)``, exactly as dlib) from
    the **target's** landmarks, which the generated frame is meant to follow. Descriptors of real
    frames are cached across table cells.

    Args:
        net: :class:`headpuppet.nets.dlib_resnet.DlibResNet` (``(B, 3, 150, 150)`` in [-1, 1] -> ``(B, 128)``).
        device: where it runs (CPU or CUDA); batch_size: chips per forward pass.
    """

    name, label, higher_is_better = "csim-dlib", "CSIM (dlib)", True

    def __init__(self, net, device="cpu", batch_size: int = 32):
        self.net, self.device, self.batch_size = net, device, batch_size
        self._cache = _FeatureCache()
        super().__init__()

    def embed(self, images: np.ndarray, points: np.ndarray) -> np.ndarray:
        """``(B, S, S, 3)`` uint8 and ``(B, 68, 2)`` landmarks -> ``(B, 128)`` unit descriptors
        (NaN rows, i.e. failed frames, where the landmarks are not finite)."""
        import torch

        from .media.imaging import to_tensor
        from .nets.dlib_resnet import extract_chips

        images, points = np.asarray(images), np.asarray(points, np.float64)
        ok = np.isfinite(points).all(axis=(1, 2))
        e = np.full((len(images), 128), np.nan)
        if ok.any():
            chips = extract_chips(images[ok], points[ok])  # (b, 150, 150, 3) uint8, as dlib's
            out = []
            with torch.no_grad():
                for i in range(0, len(chips), self.batch_size):
                    x = to_tensor(chips[i:i + self.batch_size]).to(self.device)
                    out.append(self.net(x).double().cpu().numpy())
            e[ok] = np.concatenate(out)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    def scores(self, batch):
        fake = self.embed(batch.fake, batch.real_points)
        idx = np.arange(len(batch.real))
        real = self._cache.get(batch.real_keys, idx, lambda i: self.embed(batch.real[i], batch.real_points[i]))
        return (fake * real).sum(1)


# --------------------------------------------------------------------------------------------
# Metric loading (through the registry)


@dataclass
class MetricStatus:
    """Whether a requested metric runs; when not, why and what fixes it (one line)."""

    name: str
    computed: bool
    label: str = ""
    higher_is_better: bool | None = None
    reason: str = ""


def load_metrics(pm, names: list[str] | None = None, weights_dir: Path | None = None,
                 device: str = "cpu") -> tuple[dict[str, Metric], dict[str, MetricStatus]]:
    """Create the requested metrics (default: every registered one, paper's first).

    A metric whose factory raises :class:`WeightsMissingError` (or any project error) is returned
    as not computed with that message, which names the fixing command; unknown names are errors.
    """
    from .plugins import registry

    reg = registry(pm, "metric")
    if names is None:
        names = [n for n in PAPER_METRICS if n in reg] + [n for n in reg.names() if n not in PAPER_METRICS]
    metrics: dict[str, Metric] = {}
    status: dict[str, MetricStatus] = {}
    for name in names:
        entry = reg[name]  # unknown -> PluginError listing the known ones
        try:
            m = entry.create(weights_dir, device=device)
        except HeadpuppetError as exc:
            label, hib = KNOWN_LABELS.get(name, (name, None))
            status[name] = MetricStatus(name, False, label, hib, str(exc))
            continue
        metrics[name] = m
        status[name] = MetricStatus(name, True, getattr(m, "label", name), getattr(m, "higher_is_better", None))
    return metrics, status


# --------------------------------------------------------------------------------------------
# Methods: anything that turns K shots + target landmarks into frames


@runtime_checkable
class Method(Protocol):
    """A row family of the table: a baseline or a model in one mode.

    ``prepare(shots (K, S, S, 3) uint8, points (K, 68, 2), iris (K, 2, 3) | None, video_id) -> state``
    once per video (fine-tuning happens here); ``render(state, points (B, 68, 2), iris) ->
    (B, S, S, 3) uint8`` for batches of target poses, in the same crop as the shots.
    """

    name: str

    def prepare(self, shots: np.ndarray, points: np.ndarray, iris=None, video_id: str = "") -> Any: ...

    def render(self, state: Any, points: np.ndarray, iris=None) -> np.ndarray: ...


class ModelMethod:
    """The meta-learned model through :class:`headpuppet.inference.Animator`, feed-forward (``ff``:
    ``psi = P e`` from the embedder's mean over the K shots) or fine-tuned (``ft``: section 3.4,
    ``finetune_steps`` steps on the K shots; ``None`` takes the checkpoint config's default).

    The dataset's frames are already face crops with landmarks, so the shots go straight to the
    embedder (no detection or re-cropping): generated frames are in the same crop as the targets.
    """

    def __init__(self, animator, mode: str, finetune_steps: int | None = None, seed: int = 0):
        if mode not in ("ff", "ft"):
            raise HeadpuppetError(f"unknown mode '{mode}'; use ff (feed-forward) or ft (fine-tuned)")
        self.animator, self.mode, self.finetune_steps, self.seed = animator, mode, finetune_steps, seed
        self.name = mode.upper()
        self._content_loss = None

    def prepare(self, shots, points, iris=None, video_id: str = ""):
        import torch

        from .fewshot.person import Person

        a = self.animator
        points = np.asarray(points, np.float32)
        if iris is not None and not np.isfinite(iris).all():
            iris = None  # a shot without irises: draw none rather than NaN circles
        e = a.embed(shots, points, iris)  # (1, N) mean over the K shots
        with torch.no_grad():
            psi = a.generator.project(e)  # (1, P)
        w0 = getattr(a.discriminator, "w0", None)
        w = (w0.detach().to(e) + e).reshape(1, -1) if w0 is not None else None  # w' = w0 + e_new
        person = Person(frames=np.asarray(shots), points=points, iris=iris, e=e, psi=psi, w=w)
        if self.mode == "ft":
            if self._content_loss is None:  # built once: the perceptual networks are large
                from .losses import ContentLoss

                self._content_loss = ContentLoss(a.pm, a.cfg.loss, device=a.device)
            person = a.fine_tune(person, steps=self.finetune_steps, content_loss=self._content_loss,
                                 seed=_seed(self.seed, video_id, len(shots)))
        return person

    def render(self, state, points, iris=None):
        if iris is not None and not np.isfinite(iris).all():
            iris = None
        return self.animator.render(state, np.asarray(points, np.float32), iris=iris)


# --------------------------------------------------------------------------------------------
# The protocol runner


@dataclass
class EvalSettings:
    """What ``headpuppet evaluate`` runs (see the module docstring for the protocol).

    Attributes:
        shots: the K values.
        frames_per_video: target frames drawn per video (from the part the shots never come from).
        max_videos: evaluate at most this many videos (the first ones in id order).
        seed: the seed of every random choice (shots, targets, fine-tuning).
        examples: videos shown in the PNG grids.
    """

    shots: tuple[int, ...] = DEFAULT_SHOTS
    frames_per_video: int = 8
    max_videos: int | None = None
    seed: int = 0
    batch_size: int = 8
    examples: int = 4


def _seed(seed: int, video_id: str, k: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(video_id.encode()) * 131 + k) % (2 ** 31)


def plan_video(video_id: str, num_frames: int, k: int, frames_per_video: int, seed: int):
    """Shot and target frame indices for one video, or ``None`` when it has fewer than K + 1 frames.

    Targets come from the second half of the video (the same ones for every K where the video is
    long enough, so rows of different K compare like with like); shots from the part before the
    first target, so the model never sees a target frame.
    """
    if num_frames < k + 1:
        return None
    rng_t = np.random.default_rng([seed, zlib.crc32(video_id.encode())])
    half = num_frames // 2
    pool = np.arange(half, num_frames)
    targets = np.sort(rng_t.choice(pool, min(frames_per_video, len(pool)), replace=False))
    split = max(half, k)  # shots need k distinct frames before the split
    targets = targets[targets >= split]
    if len(targets) == 0:
        rest = np.arange(split, num_frames)
        targets = np.sort(rng_t.choice(rest, min(frames_per_video, len(rest)), replace=False))
    rng_s = np.random.default_rng([seed, zlib.crc32(video_id.encode()), k])
    shots = np.sort(rng_s.choice(split, k, replace=False))
    return shots.astype(int), targets.astype(int)


@dataclass
class CellResult:
    """One row of the table: a method at one K."""

    method: str
    shots: int
    videos: int
    frames: int
    metrics: dict[str, dict] = field(default_factory=dict)  # name -> asdict(MetricValue)

    @property
    def row(self) -> str:
        return f"{self.method} ({self.shots})"


@dataclass
class Skip:
    video: str
    shots: int
    reason: str


@dataclass
class Example:
    """One row of a PNG grid: sources, the driver (real target) frame, and each method's result."""

    video: str
    shots: int
    sources: list  # (S, S, 3) uint8 frames (up to 4)
    driver: np.ndarray
    driver_points: np.ndarray
    outputs: dict = field(default_factory=dict)  # method -> (S, S, 3) uint8


@dataclass
class EvalResults:
    settings: dict
    dataset: dict
    checkpoint: dict | None
    methods: list[str]
    metrics: dict[str, MetricStatus]
    cells: list[CellResult] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)

    def skipped_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.skipped:
            counts[str(s.shots)] = counts.get(str(s.shots), 0) + 1
        return counts

    def to_json(self) -> dict:
        """Everything but the example images; no timings or paths that change between runs, so the
        same inputs and seed give byte-identical files."""
        return {
            "format": EVAL_FORMAT,
            "version": EVAL_VERSION,
            "settings": self.settings,
            "dataset": self.dataset,
            "checkpoint": self.checkpoint,
            "methods": self.methods,
            "metrics": {n: asdict(s) for n, s in self.metrics.items()},
            "results": [asdict(c) for c in self.cells],
            "skipped": [asdict(s) for s in self.skipped],
            "skipped_count": self.skipped_counts(),
        }


def run_evaluation(dataset, methods: list, metrics: dict[str, Metric], status: dict[str, MetricStatus],
                   settings: EvalSettings, detector=None, reporter: Reporter | None = None,
                   checkpoint_info: dict | None = None, dataset_info: dict | None = None) -> EvalResults:
    """Run the self-reenactment protocol.

    Args:
        dataset: a :class:`headpuppet.data.format.DatasetIndex` (``.videos`` of records with
            ``.id``, ``.num_frames``, ``.landmarks``, ``.iris``, ``.frame(i)``).
        methods: :class:`Method` objects (baselines, model modes); each gives one row per K.
        metrics / status: from :func:`load_metrics`; metrics that fail on every batch (e.g. the
            landmark error with no detector) are turned into not-computed with the reason.
        detector: the landmark detector passed to metrics in :class:`MetricBatch`.
    """
    reporter = reporter or NULL
    videos = sorted(dataset.videos, key=lambda v: v.id)
    if not videos:
        raise HeadpuppetError("the dataset has no videos; preprocess some with `headpuppet preprocess VIDEOS OUT`")
    if settings.max_videos is not None:
        videos = videos[: settings.max_videos]
    if any(k < 1 for k in settings.shots):
        raise HeadpuppetError(f"--shots must be positive integers, got {list(settings.shots)}")
    results = EvalResults(
        settings=asdict(settings) | {"shots": list(settings.shots)},
        dataset=dataset_info or {"videos": len(videos)},
        checkpoint=checkpoint_info,
        methods=[m.name for m in methods],
        metrics=status,
    )
    for k in settings.shots:
        plans = {}
        for v in videos:
            plan = plan_video(v.id, v.num_frames, k, settings.frames_per_video, settings.seed)
            if plan is None:
                skip = Skip(v.id, k, f"{v.num_frames} frames, fewer than K + 1 = {k + 1}")
                results.skipped.append(skip)
                reporter.warn(f"video {v.id}: {skip.reason}; skipped for K={k}")
            else:
                plans[v.id] = plan
        usable = [v for v in videos if v.id in plans]
        examples = {v.id: None for v in usable[: settings.examples]}
        for method in methods:
            for m in metrics.values():
                m.reset()
            failed: dict[str, str] = {}
            frames = 0
            with reporter.task(f"{method.name} K={k}", total=len(usable)) as task:
                for v in usable:
                    shot_idx, target_idx = plans[v.id]
                    shots = np.stack([v.frame(int(i)) for i in shot_idx])  # (K, S, S, 3)
                    shot_pts = np.asarray(v.landmarks, np.float32)[shot_idx]  # (K, 68, 2)
                    iris = None if v.iris is None else np.asarray(v.iris, np.float32)
                    state = method.prepare(shots, shot_pts, None if iris is None else iris[shot_idx], v.id)
                    for b0 in range(0, len(target_idx), settings.batch_size):
                        tidx = target_idx[b0:b0 + settings.batch_size]
                        real = np.stack([v.frame(int(i)) for i in tidx])  # (B, S, S, 3)
                        real_pts = np.asarray(v.landmarks, np.float32)[tidx]
                        fake = method.render(state, real_pts, None if iris is None else iris[tidx])
                        batch = MetricBatch(
                            fake=np.asarray(fake, np.uint8), real=real, real_points=real_pts,
                            source=np.repeat(shots[:1], len(tidx), 0),
                            source_points=np.repeat(shot_pts[:1], len(tidx), 0), detector=detector,
                            real_keys=[(v.id, int(i)) for i in tidx],
                            source_keys=[(v.id, int(shot_idx[0]))] * len(tidx),
                        )
                        for name, m in metrics.items():
                            if name in failed:
                                continue
                            try:
                                m.update(batch)
                            except HeadpuppetError as exc:
                                failed[name] = str(exc)
                        frames += len(tidx)
                        if v.id in examples and b0 == 0:
                            ex = examples[v.id] or Example(v.id, k, list(shots[:4]), real[0], real_pts[0])
                            ex.outputs[method.name] = np.asarray(fake[0], np.uint8)
                            examples[v.id] = ex
                    task.advance(1)
            cell = CellResult(method.name, k, len(usable), frames)
            for name, m in metrics.items():
                if name in failed:
                    status[name] = MetricStatus(name, False, status[name].label, status[name].higher_is_better,
                                                failed[name])
                    continue
                cell.metrics[name] = asdict(m.compute())
            results.cells.append(cell)
        results.examples.extend(e for e in examples.values() if e is not None)
    # a metric that failed in a later cell is not computed anywhere: drop its partial values
    for cell in results.cells:
        for name in list(cell.metrics):
            if not status[name].computed:
                del cell.metrics[name]
    return results

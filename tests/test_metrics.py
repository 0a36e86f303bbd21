"""The first-party metric plugins (``headpuppet_plugins.metrics``): SSIM/PSNR against scikit-image
and the hand-written SSIM they replaced, the Frechet distance in closed form, the FID Inception and
ArcFace converters from files in the original formats, missing weights, each column from the
plugin's registration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headpuppet.evaluation import MetricBatch, load_metrics
from headpuppet.media.landmarks import inter_ocular, landmark_error
from headpuppet_plugins.metrics import CSIMMetric, FIDMetric, feature_statistics, frechet_distance, psnr, ssim

torch.set_num_threads(1)


def _face_crops(astronaut) -> tuple[np.ndarray, np.ndarray]:
    """Two batches of real face crops: the astronaut's face, shifted / noised / blurred."""
    import cv2

    face = astronaut[20:212, 140:332]  # (192, 192, 3) around her face
    a = np.stack([face[:128, :128], face[32:160, 32:160], face[64:, 64:]])
    rng = np.random.default_rng(0)
    b = np.stack([
        np.clip(a[0].astype(int) + rng.integers(-25, 26, a[0].shape), 0, 255).astype(np.uint8),
        cv2.GaussianBlur(a[1], (5, 5), 1.5),
        face[60:188, 61:189],  # a few-px shift of the third crop
    ])
    return a, b


def test_ssim_psnr_match_skimage(astronaut):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = _face_crops(astronaut)
    ours_s, ours_p = ssim(a, b), psnr(a, b)
    for i in range(len(a)):
        ref_s = structural_similarity(a[i], b[i], channel_axis=-1, data_range=255)
        ref_p = peak_signal_noise_ratio(a[i], b[i], data_range=255)
        assert ours_s[i] == pytest.approx(ref_s, abs=1e-7)
        assert ours_p[i] == pytest.approx(ref_p, abs=1e-7)
    assert ssim(a[0], a[0])[0] == pytest.approx(1.0)
    assert np.isinf(psnr(a[:1], a[:1])[0])


def _handwritten_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, win_size: int = 7) -> np.ndarray:
    """The batched numpy SSIM evaluate used before it called scikit-image (defined as skimage's
    defaults), kept to prove the metric's numbers did not change. ``(B, H, W, 3)`` -> ``(B,)``."""
    from scipy.ndimage import uniform_filter

    x = np.ascontiguousarray(a.transpose(0, 3, 1, 2), dtype=np.float64)  # (B, C, H, W)
    y = np.ascontiguousarray(b.transpose(0, 3, 1, 2), dtype=np.float64)
    pad = (win_size - 1) // 2

    def mean(t):
        out = np.empty_like(t)
        for i in np.ndindex(t.shape[:2]):
            uniform_filter(t[i], size=win_size, mode="reflect", output=out[i])
        return out[..., pad:-pad or None, pad:-pad or None]

    ux, uy = mean(x), mean(y)
    n = win_size * win_size
    cov_norm = n / (n - 1)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(axis=(1, 2, 3))


def _handwritten_psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(data_range ** 2 / mse)


def test_ssim_psnr_give_the_numbers_of_the_handwritten_metric(astronaut):
    a, b = _face_crops(astronaut)
    rng = np.random.default_rng(5)
    c = rng.integers(0, 256, (2, 40, 56, 3), dtype=np.uint8)  # not square, not a face
    d = np.clip(c.astype(int) + rng.integers(-30, 31, c.shape), 0, 255).astype(np.uint8)
    for x, y in ((a, b), (c, d)):
        np.testing.assert_allclose(ssim(x, y), _handwritten_ssim(x, y), rtol=0, atol=1e-12)
        np.testing.assert_allclose(psnr(x, y), _handwritten_psnr(x, y), rtol=0, atol=1e-12)
    assert ssim(a, b).dtype == np.float64 and ssim(a, b).shape == (3,)


def test_columns_come_from_the_plugin_registration(pm, tmp_path, monkeypatch):
    """Label, direction and decimals are the plugin's, also for a metric that cannot run."""
    from headpuppet.evaluation.report import format_value

    monkeypatch.setenv("HEADPUPPET_WEIGHTS", str(tmp_path))
    _, status = load_metrics(pm, ["fid", "ssim", "psnr", "landmark-error"], weights_dir=tmp_path)
    cols = {n: (s.label, s.higher_is_better, s.decimals) for n, s in status.items()}
    assert cols == {"fid": ("FID", False, 1), "ssim": ("SSIM", True, 3), "psnr": ("PSNR", True, 2),
                    "landmark-error": ("LMK-err", False, 3)}
    assert not status["fid"].computed
    assert format_value({"value": 12.345, "failed": 0}, status["fid"].decimals) == "12.3"
    assert format_value({"value": 0.5, "failed": 2}, status["ssim"].decimals) == "0.500*"


def test_ssim_on_shared_photo_matches_skimage():
    from headpuppet.testing import shared_file
    from skimage.metrics import structural_similarity

    from headpuppet.media.imaging import read_image

    img = read_image(shared_file("photos/fr_obama.jpg"))
    h, w = img.shape[:2]
    a = img[h // 4: h // 4 + 96, w // 4: w // 4 + 96]
    b = img[h // 4 + 3: h // 4 + 99, w // 4 + 2: w // 4 + 98]
    assert ssim(a, b)[0] == pytest.approx(structural_similarity(a, b, channel_axis=-1, data_range=255), abs=1e-7)


def test_frechet_distance_closed_form_diagonal():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_matches_the_sqrtm_route_of_pytorch_fid():
    from scipy import linalg

    rng = np.random.default_rng(3)
    a = rng.normal(size=(300, 32))
    b = rng.normal(size=(300, 32)) @ rng.normal(size=(32, 32)) * 0.3 + 1.0  # correlated, shifted
    m1, s1 = feature_statistics(a)
    m2, s2 = feature_statistics(b)
    ref = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(ref, rel=1e-8)


def test_frechet_distance_of_samples_is_near_zero_for_one_distribution():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4000, 3))
    y = rng.normal(size=(4000, 3)) + np.array([2.0, 0, 0])
    same = frechet_distance(*feature_statistics(x), *feature_statistics(rng.normal(size=(4000, 3))))
    shifted = frechet_distance(*feature_statistics(x), *feature_statistics(y))
    assert same < 0.02
    assert shifted == pytest.approx(4.0, rel=0.05)  # ||(2, 0, 0)||^2


def test_landmark_error_is_normalised_by_interocular():
    ref = np.zeros((68, 2), np.float32)
    ref[36], ref[45] = (10, 50), (50, 50)  # inter-ocular distance 40
    assert inter_ocular(ref) == pytest.approx(40)
    pred = ref + np.array([3.0, 4.0])  # every point 5 px off
    assert landmark_error(pred, ref) == pytest.approx(5 / 40)


def _pytorch_fid_state_dict() -> dict:
    from headpuppet.nets.inception import FIDInceptionV3

    torch.manual_seed(0)
    net = FIDInceptionV3()
    for m in net.modules():  # non-trivial BN statistics so a wrong mapping would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.state_dict()


def test_inception_converter_round_trip(tmp_path):
    from headpuppet.nets.inception import FIDInceptionV3, build_fid_inception, convert_pytorch_fid

    sd = _pytorch_fid_state_dict()
    # names and shapes of pytorch-fid's FIDInceptionV3 (torchvision's Inception3, 1008 classes, no aux)
    assert sd["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert sd["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert sd["Conv2d_1a_3x3.bn.running_var"].shape == (32,)
    assert sd["fc.weight"].shape == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in sd)
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(sd, path)

    converted = convert_pytorch_fid(path)
    net = build_fid_inception(converted)
    ref = FIDInceptionV3().eval()
    ref.load_state_dict(sd)
    x = torch.rand(1, 3, 75, 75) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(net(x), ref(x), atol=1e-5)
        assert net(x).shape == (1, 2048)

    del sd["Mixed_5b.branch1x1.conv.weight"]
    torch.save(sd, tmp_path / "broken.pth")
    from headpuppet.errors import WeightsMissingError

    with pytest.raises(WeightsMissingError, match="Mixed_5b.branch1x1.conv.weight"):
        convert_pytorch_fid(tmp_path / "broken.pth")


def test_arcface_converter_round_trip_fp16_and_ddp_prefix(tmp_path):
    from headpuppet.nets.facerec import DEPTHS, IResNet, build_arcface, convert_arcface

    torch.manual_seed(0)
    ref = IResNet(DEPTHS["r18"]).eval()
    sd = ref.state_dict()
    # InsightFace's names (recognition/arcface_torch/backbones/iresnet.py)
    for key in ("conv1.weight", "prelu.weight", "layer1.0.downsample.0.weight", "layer4.1.bn3.running_var",
                "fc.weight", "features.running_mean"):
        assert key in sd
    assert sd["fc.weight"].shape == (512, 512 * 7 * 7)
    torch.save({f"module.{k}": v.half() if v.is_floating_point() else v for k, v in sd.items()},
               tmp_path / "backbone.pth")
    net = build_arcface(convert_arcface(tmp_path / "backbone.pth", arch="r18"), arch="r18")
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        ref_half = IResNet(DEPTHS["r18"]).eval()
        ref_half.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in sd.items()})
        assert torch.allclose(net(x), ref_half(x), atol=1e-4)


def test_missing_weights_mean_not_computed_with_the_fixing_command(pm, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADPUPPET_WEIGHTS", str(tmp_path))
    metrics, status = load_metrics(pm, ["ssim", "fid", "csim", "psnr"], weights_dir=tmp_path)
    assert set(metrics) == {"ssim", "psnr"}
    for name in ("fid", "csim"):
        assert not status[name].computed
        assert "headpuppet weights" in status[name].reason
    assert status["fid"].label == "FID" and status["fid"].higher_is_better is False
    assert status["ssim"].computed


def test_fid_and_csim_factories_load_imported_weights(pm, tmp_path):
    """Through the weights manager: ArcFace imports from its original file; the FID file's sha256
    prefix is checked, so a random file is refused and is saved directly instead."""
    from safetensors.torch import save_file

    from headpuppet import weights
    from headpuppet.errors import HeadpuppetError
    from headpuppet.nets.facerec import DEPTHS, IResNet

    specs = weights.specs(pm)
    sd = _pytorch_fid_state_dict()
    torch.save(sd, tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    with pytest.raises(HeadpuppetError, match="6726825d"):
        weights.import_file(specs["inception-fid"], tmp_path / "pt_inception-2015-12-05-6726825d.pth", dest=tmp_path)
    converted = specs["inception-fid"].converter(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    save_file(converted, str(weights.weight_path("inception-fid", tmp_path)))

    torch.manual_seed(1)
    torch.save(IResNet(DEPTHS["r100"]).state_dict(), tmp_path / "backbone.pth")
    weights.import_file(specs["arcface-r100"], tmp_path / "backbone.pth", dest=tmp_path, warn=lambda m: None)

    metrics, status = load_metrics(pm, ["fid", "csim"], weights_dir=tmp_path)
    assert status["fid"].computed and status["csim"].computed
    assert isinstance(metrics["fid"], FIDMetric) and isinstance(metrics["csim"], CSIMMetric)


def _points(size: int) -> np.ndarray:
    """A plausible frontal 68-point layout (only eyes, nose, mouth corners matter for alignment)."""
    p = np.tile(np.array([size / 2, size / 2], np.float32), (68, 1))
    p[36:42] = (0.35 * size, 0.42 * size)
    p[42:48] = (0.65 * size, 0.42 * size)
    p[36], p[45] = (0.3 * size, 0.42 * size), (0.7 * size, 0.42 * size)
    p[30] = (0.5 * size, 0.58 * size)
    p[48], p[54] = (0.38 * size, 0.72 * size), (0.62 * size, 0.72 * size)
    return p


def test_csim_and_fid_metrics_behave(astronaut):
    from headpuppet.nets.facerec import IResNet

    torch.manual_seed(0)
    face = np.ascontiguousarray(astronaut[30:222:3, 150:342:3])  # (64, 64, 3)
    other = np.ascontiguousarray(np.flipud(face))
    pts = np.stack([_points(64)] * 2)
    net = IResNet((1, 1, 1, 1), width=8).eval()
    csim = CSIMMetric(net)
    batch = MetricBatch(fake=np.stack([face, other]), real=np.stack([face, face]), real_points=pts,
                        source=np.stack([face, face]), source_points=pts)
    s = csim.scores(batch)
    assert s[0] == pytest.approx(1.0, abs=1e-6)  # the source itself
    assert s[1] < s[0]

    # a small feature net: the Inception itself is tested above, and sqrtm of 2048x2048 is slow
    feat = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    fid = FIDMetric(feat.eval(), batch_size=2)
    fid.update(MetricBatch(fake=np.stack([face, other, face]), real=np.stack([face, other, face]),
                           real_points=np.stack([pts[0]] * 3), source=np.stack([face] * 3),
                           source_points=np.stack([pts[0]] * 3)))
    v = fid.compute()
    assert v.count == 3 and v.value == pytest.approx(0.0, abs=1e-3)  # same sets
    fid.reset()
    assert fid.compute().value is None  # fewer than 2 frames

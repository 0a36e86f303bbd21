"""First-party perceptual networks for the content loss L_CNT, and the weights they need.

Zakharov et al. 2019, section 3.2: the content loss L_CNT compares the real and generated frames through
VGG19 (ImageNet) and VGGFace (face identities). Registered here:

* ``vgg19``   - :class:`headpuppet.nets.VGG19`, torchvision's ImageNet weights (``headpuppet weights ... vgg19``);
* ``vggface`` - :class:`headpuppet.nets.VGGFace`, Parkhi et al.'s VGG-Face in pytorch-mcn's conversion;
* ``laplacian-pyramid`` - not the paper's loss: a weight-free stand-in (L1 between Laplacian-pyramid
  levels) so that training runs on machines without the pretrained files;
* ``dlib-identity`` - not the paper's either: an identity term from dlib's face-recognition ResNet
  (:class:`headpuppet.nets.dlib_resnet.DlibIdentity`), whose weights come with the
  ``face-recognition-models`` dependency. L1 between its activations (the last two residual stages
  ``level1``, ``level0`` and the 128-d ``descriptor`` by default; ``loss.perceptual_layers`` takes
  their indices 4, 5, 6) of a face-centred 150 px chip of each frame.

Factories: ``factory(weights_dir=None, device="cpu", layers=None)``; ``vgg19`` / ``vggface`` raise
:class:`headpuppet.errors.WeightsMissingError` naming the ``headpuppet weights`` command when their
file is absent. Also registers the two :class:`WeightSpec` s (source, sha256, licence, converter).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from headpuppet import hookimpl
from headpuppet.protocols import WeightSpec
from headpuppet.weights import load_weights

# torch and the networks are imported inside the factories: this module is imported by every
# `headpuppet` command (plugin discovery), and `headpuppet --help` should not pay for torch.


def convert_torchvision_vgg19(path):
    # lazy: torch, +1.4 s at CLI start-up (measured)
    from headpuppet.nets.vgg import convert_torchvision_vgg19 as convert

    return convert(path)


def convert_vgg_face_dag(path):
    from headpuppet.nets.vgg import convert_vgg_face_dag as convert  # lazy: torch (CLI start-up)

    return convert(path)

VGG19_SPEC = WeightSpec(
    name="vgg19",
    description="VGG19 trained on ImageNet-1k (torchvision IMAGENET1K_V1), conv trunk for L_CNT",
    source="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    # torch.hub's naming rule: the part after '-' in the file name is the first hex digits of the
    # file's sha256; torchvision publishes nothing longer for this file.
    source_sha256="dcbb9e9d",
    licence="BSD-3-Clause (torchvision); ImageNet training data: non-commercial research terms",
    converter=convert_torchvision_vgg19,
    filename="vgg19-dcbb9e9d.pth",
    extra={"title": "VGG19",
           "sha256_note": "prefix only: torchvision/torch.hub publish the first 8 hex digits of the sha256 "
                          "in the file name (vgg19-<sha256[:8]>.pth)"},
)

VGGFACE_SPEC = WeightSpec(
    name="vggface",
    description="VGG-Face (Parkhi et al. 2015, VGG16, 2622 identities) in pytorch-mcn's conversion, conv trunk",
    source="https://www.robots.ox.ac.uk/~albanie/models/pytorch-mcn/vgg_face_dag.pth",
    source_sha256=None,
    # The VGG-Face page: "The provided models can be used for non-commercial research purposes under
    # Creative Commons Attribution License." pytorch-mcn's conversion carries the same terms.
    licence="non-commercial research use, Creative Commons Attribution (Oxford VGG, VGG-Face page)",
    converter=convert_vgg_face_dag,
    filename="vgg_face_dag.pth",
    extra={"title": "VGGFace",
           "sha256_note": "unknown - not verified: the source publishes no checksum; import accepts the file "
                          "with a warning and records its sha256 in the .safetensors metadata"},
)


def vgg19(weights_dir: str | Path | None = None, device="cpu", layers: Sequence[int] | None = None):
    """VGG19 trunk with the imported torchvision weights (paper layers 1, 6, 11, 20, 29 by default)."""
    from headpuppet.nets.vgg import VGG19  # lazy: torch (CLI start-up)

    state = load_weights("vgg19", dest=weights_dir, title="VGG19")
    return VGG19(layers=layers).load_trunk(state).to(device)


def vggface(weights_dir: str | Path | None = None, device="cpu", layers: Sequence[int] | None = None):
    """VGGFace trunk with the imported pytorch-mcn weights (paper layers 1, 6, 11, 18, 25 by default)."""
    from headpuppet.nets.vgg import VGGFace  # lazy: torch (CLI start-up)

    state = load_weights("vggface", dest=weights_dir, title="VGGFace")
    return VGGFace(layers=layers, bgr=False).load_trunk(state).to(device)


def laplacian_pyramid(weights_dir: str | Path | None = None, device="cpu", layers: Sequence[int] | None = None):
    """The weight-free stand-in: L1 between Laplacian-pyramid bands (see headpuppet.nets.pyramid)."""
    from headpuppet.nets.pyramid import LaplacianPyramid  # lazy: torch (CLI start-up)

    return LaplacianPyramid(layers=layers, device=device)


def dlib_identity(weights_dir: str | Path | None = None, device="cpu", layers: Sequence[str] | None = None):
    """dlib's face ResNet as an identity feature-matching network (converted from
    face-recognition-models' file on first use; WeightsMissingError names the fix when absent)."""
    from headpuppet.nets.dlib_resnet import DlibIdentity, load_dlib_resnet  # lazy: torch (CLI start-up)

    return DlibIdentity(load_dlib_resnet(weights_dir, device=device), layers=layers).to(device)


@hookimpl
def register_perceptual_losses(register):
    register("vgg19", vgg19)
    register("vggface", vggface)
    register("laplacian-pyramid", laplacian_pyramid)
    register("dlib-identity", dlib_identity)


@hookimpl
def register_weights(register):
    register(VGG19_SPEC)
    register(VGGFACE_SPEC)


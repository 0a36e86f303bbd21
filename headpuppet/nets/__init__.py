"""Fixed (pretrained, frozen) reference networks used by the losses and metrics.

``vgg``: VGG19 (Simonyan & Zisserman 2015, torchvision layout) and VGGFace (Parkhi et al. 2015,
VGG16 layout) conv trunks for the content loss L_CNT of Zakharov et al. 2019, section 3.2.
Their weights are managed by :mod:`headpuppet.weights` (``headpuppet weights ...``).
"""

from .vgg import (
    VGG16_CFG,
    VGG19_CFG,
    VGGFace,
    VGGFeatures,
    VGG19,
    convert_torchvision_vgg19,
    convert_vgg_face_dag,
)

__all__ = [
    "VGG16_CFG",
    "VGG19_CFG",
    "VGGFace",
    "VGGFeatures",
    "VGG19",
    "convert_torchvision_vgg19",
    "convert_vgg_face_dag",
]

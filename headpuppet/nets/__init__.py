"""Fixed (pretrained, frozen) reference networks used by the losses and metrics.

``vgg``: VGG19 (Simonyan & Zisserman 2015, torchvision layout) and VGGFace (Parkhi et al. 2015,
VGG16 layout) conv trunks for the content loss L_CNT of Zakharov et al. 2019, section 3.2.
Their weights are managed by :mod:`headpuppet.weights` (``headpuppet weights ...``).
"""

def frozen(net, state_dict=None, title: str = "network", device="cpu"):
    """Load ``state_dict`` into ``net`` (random weights when None: tests and benchmarks only), then
    freeze it in eval mode on ``device``. Every parameter and buffer but BatchNorm's step counters must
    be present; extra keys are ignored."""
    if state_dict is not None:
        net.load_state_dict(state_dict, strict=False)
        missing = [k for k in net.state_dict() if k not in state_dict and not k.endswith("num_batches_tracked")]
        if missing:
            raise ValueError(f"{title} state dict lacks {missing[:3]}")
    net.eval().requires_grad_(False)
    return net.to(device)


from .vgg import (  # noqa: E402
    VGG16_CFG,
    VGG19_CFG,
    VGGFace,
    VGGFeatures,
    VGG19,
    convert_torchvision_vgg19,
    convert_vgg_face_dag,
)

__all__ = [
    "frozen",
    "VGG16_CFG",
    "VGG19_CFG",
    "VGGFace",
    "VGGFeatures",
    "VGG19",
    "convert_torchvision_vgg19",
    "convert_vgg_face_dag",
]

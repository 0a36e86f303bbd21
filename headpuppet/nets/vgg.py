"""VGG19 and VGGFace conv trunks for the content loss L_CNT.

Follows Zakharov et al., "Few-Shot Adversarial Learning of Realistic Neural Talking Head Models"
(ICCV 2019), section 3.2: the content loss L_CNT compares activations of a VGG19 trained on ImageNet
(Simonyan & Zisserman, ICLR 2015) and of VGGFace (Parkhi, Vedaldi & Zisserman, "Deep Face
Recognition", BMVC 2015, a VGG16 trained to classify 2622 identities) between the real frame and
the generated one. The paper names the compared layers "Conv1,6,11,20,29" (VGG19) and
"Conv1,6,11,18,25" (VGGFace).

Layer interpretation. We read those numbers as indices into the ``features`` ``nn.Sequential`` of
the torchvision layout (conv, ReLU, ..., max-pool, ...), which is how public re-implementations of
the paper read them too. With that layout every listed index is a ReLU output:

* VGG19:   1 relu1_1, 6 relu2_1, 11 relu3_1, 20 relu4_1, 29 relu5_1;
* VGGFace: 1 relu1_1, 6 relu2_1, 11 relu3_1, 18 relu4_1, 25 relu5_1.

Any other index of ``features`` may be asked for (``layers=``); the network runs only as far as
the deepest requested index.

Input normalisation (each network does its own; callers pass images in ``[-1, 1]`` RGB):

* VGG19 (torchvision weights): ``[0, 1]`` RGB, then ImageNet mean ``(0.485, 0.456, 0.406)`` and
  std ``(0.229, 0.224, 0.225)``.
* VGGFace: ``[0, 255]`` with the mean face pixel ``R 129.186279, G 104.762383, B 93.593964`` of the
  original release, std 1. The original Caffe release (``VGG_FACE.caffemodel``) takes BGR input;
  the MatConvNet / PyTorch conversion this project imports (Albanie's pytorch-mcn
  ``vgg_face_dag.pth``, whose ``meta`` records ``mean = [129.186279296875, 104.76238250732422,
  93.59396362304688]``) takes RGB, its first convolution's input channels having been reordered by
  the conversion. ``VGGFace(bgr=True)`` is there for weights converted straight from the Caffe
  release.

Only the conv trunks are kept (the fully connected classifiers, 4096-4096-1000 / 4096-4096-2622,
are not used by the loss and would add ~120M parameters); the converters drop them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from ..weights import WeightsFormatError

#: torchvision's configuration "E": numbers are conv output channels, "M" a 2x2 max-pool.
VGG19_CFG: tuple = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                    512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
#: configuration "D" (VGG16), the VGGFace trunk.
VGG16_CFG: tuple = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                    512, 512, 512, "M", 512, 512, 512, "M")

VGG19_LAYERS = (1, 6, 11, 20, 29)
VGGFACE_LAYERS = (1, 6, 11, 18, 25)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: VGGFace mean pixel in R, G, B order on [0, 255] (pytorch-mcn ``vgg_face_dag`` meta).
VGGFACE_MEAN_RGB = (129.186279296875, 104.76238250732422, 93.59396362304688)

#: vgg_face_dag.pth conv names in order; with VGG16_CFG they sit at these ``features`` indices.
VGG_FACE_DAG_CONVS = ("conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
                      "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3")


def make_features(cfg: Sequence) -> nn.Sequential:
    """The conv trunk in torchvision's layout, so ``features.N.weight`` keys match 1:1.

    ReLUs are not in-place (torchvision's are): an activation handed to the loss must not be
    overwritten by the next layer, whatever index the caller asks for.
    """
    layers: list[nn.Module] = []
    in_ch = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            in_ch = int(v)
    return nn.Sequential(*layers)


def conv_indices(cfg: Sequence) -> list[int]:
    """Indices of the convolutions inside ``make_features(cfg)``."""
    out, i = [], 0
    for v in cfg:
        if v == "M":
            i += 1
        else:
            out.append(i)
            i += 2
    return out


class VGGFeatures(nn.Module):
    """A frozen VGG conv trunk returning activations at chosen ``features`` indices.

    Follows :class:`headpuppet.protocols.PerceptualNetwork`: ``forward(x (B, 3, H, W) in [-1, 1]
    RGB) -> list[(B, C_l, H_l, W_l)]``, one tensor per index of ``layers`` in the order given.
    Subclasses set the input normalisation. The state dict holds only ``features.N.weight/bias``
    (the normalisation constants are non-persistent buffers).

    Args:
        cfg: channel configuration (``VGG19_CFG`` / ``VGG16_CFG``).
        layers: indices into ``features`` whose outputs are returned.
        device, dtype: where the module lives (float32 by default).
    """

    weights: tuple[str, ...] = ()

    def __init__(self, cfg: Sequence, layers: Sequence[int], device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.features = make_features(cfg)
        layers = [int(i) for i in layers]
        if not layers:
            raise ValueError("layers must name at least one index of `features`")
        bad = [i for i in layers if not 0 <= i < len(self.features)]
        if bad:
            raise ValueError(f"layer indices {bad} are outside features[0..{len(self.features) - 1}]")
        self.layers = layers
        self._last = max(layers)
        self.requires_grad_(False)
        self.to(device=device, dtype=dtype)
        self.eval()

    def train(self, mode: bool = True) -> "VGGFeatures":
        # A reference network: it stays in eval mode when a parent module is put in training.
        return super().train(False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` RGB -> the network's own input space."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.normalise(x)  # (B, 3, H, W)
        wanted = set(self.layers)
        found: dict[int, torch.Tensor] = {}
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in wanted:
                found[i] = h  # (B, C_i, H_i, W_i)
            if i == self._last:
                break
        return [found[i] for i in self.layers]

    def load_trunk(self, state: dict[str, torch.Tensor]) -> "VGGFeatures":
        """Load ``features.N.weight/bias`` (strict: every conv must be there, nothing else)."""
        self.load_state_dict(state, strict=True)
        return self


class VGG19(VGGFeatures):
    """VGG19 conv trunk (torchvision ``vgg19`` layout) with ImageNet input normalisation.

    Paper default layers ``(1, 6, 11, 20, 29)`` = relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
    """

    weights = ("vgg19",)

    def __init__(self, layers: Sequence[int] | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32):
        super().__init__(VGG19_CFG, VGG19_LAYERS if layers is None else layers, device, dtype)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, device=device, dtype=dtype).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD, device=device, dtype=dtype).view(1, 3, 1, 1),
                             persistent=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1.0) * 0.5 - self.mean) / self.std  # [-1, 1] -> [0, 1] -> ImageNet-standardised


class VGGFace(VGGFeatures):
    """VGGFace conv trunk (VGG16 layout; Parkhi et al. 2015, 2622 identities) on ``[0, 255]``.

    Paper default layers ``(1, 6, 11, 18, 25)`` = relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.

    Args:
        bgr: feed the channels in B, G, R order (weights converted straight from the Caffe
            release); ``False`` (default) for pytorch-mcn's ``vgg_face_dag.pth``, which takes RGB.
    """

    weights = ("vggface",)
    num_classes = 2622  # of the original classifier, which is not kept

    def __init__(self, layers: Sequence[int] | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, bgr: bool = False):
        super().__init__(VGG16_CFG, VGGFACE_LAYERS if layers is None else layers, device, dtype)
        self.bgr = bool(bgr)
        self.register_buffer("mean", torch.tensor(VGGFACE_MEAN_RGB, device=device, dtype=dtype).view(1, 3, 1, 1),
                             persistent=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        h = (x + 1.0) * 127.5 - self.mean  # (B, 3, H, W) RGB on [0, 255], mean pixel removed
        return h.flip(1) if self.bgr else h


# --- converters from the published files (used by the WeightSpecs in plugins/perceptual.py) ---

def _torch_load(path: str | Path) -> dict:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and weights_only errors all mean "not this format"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WeightsFormatError(f"{path} is not a PyTorch state dict readable with weights_only=True "
                                 f"({type(exc).__name__}: {first[:160]})") from None
    if hasattr(obj, "state_dict") and not isinstance(obj, dict):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsFormatError(f"{path} does not hold a plain state dict (name -> tensor)")
    return obj


def _check_trunk(path, out: dict[str, torch.Tensor], reference: VGGFeatures, what: str) -> dict[str, torch.Tensor]:
    expected = {k: v.shape for k, v in reference.state_dict().items()}
    for key, shape in expected.items():
        if key not in out:
            raise WeightsFormatError(f"{path} is not {what}: tensor for {key} is missing")
        if tuple(out[key].shape) != tuple(shape):
            raise WeightsFormatError(f"{path} is not {what}: {key} has shape {tuple(out[key].shape)}, "
                                     f"expected {tuple(shape)}")
    return {k: out[k].detach().to(torch.float32).contiguous() for k in expected}


def convert_torchvision_vgg19(path: str | Path) -> dict[str, torch.Tensor]:
    """torchvision's ``vgg19-dcbb9e9d.pth`` (a plain state dict) -> :class:`VGG19` state dict.

    The keys ``features.N.weight/bias`` carry over unchanged; ``classifier.*`` is dropped.
    """
    sd = _torch_load(path)
    feats = {k: v for k, v in sd.items() if k.startswith("features.")}
    return _check_trunk(path, feats, _shape_reference("vgg19"), "torchvision's vgg19 state dict")


def convert_vgg_face_dag(path: str | Path) -> dict[str, torch.Tensor]:
    """pytorch-mcn's ``vgg_face_dag.pth`` (keys ``conv1_1.weight`` ... ``fc8.bias``) -> :class:`VGGFace`.

    ``convX_Y`` maps to ``features.N`` in VGG16 order (conv1_1 -> 0, conv1_2 -> 2, conv2_1 -> 5, ...,
    conv5_3 -> 28); ``fc6``, ``fc7``, ``fc8`` are dropped.
    """
    what = "pytorch-mcn's vgg_face_dag state dict (keys conv1_1.weight ... fc8.bias)"
    sd = _torch_load(path)
    out: dict[str, torch.Tensor] = {}
    for name, idx in zip(VGG_FACE_DAG_CONVS, conv_indices(VGG16_CFG)):
        for part in ("weight", "bias"):
            key = f"{name}.{part}"
            if key not in sd:
                raise WeightsFormatError(f"{path} is not {what}: tensor for {key} is missing")
            out[f"features.{idx}.{part}"] = sd[key]
    return _check_trunk(path, out, _shape_reference("vggface"), what)


_SHAPES: dict[str, VGGFeatures] = {}


def _shape_reference(name: str) -> VGGFeatures:
    """An uninitialised network on the meta device: only its parameter shapes are read."""
    if name not in _SHAPES:
        with torch.device("meta"):
            _SHAPES[name] = VGG19(device="meta") if name == "vgg19" else VGGFace(device="meta")
    return _SHAPES[name]

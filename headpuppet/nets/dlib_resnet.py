"""dlib's face-recognition ResNet in PyTorch, read straight from dlib's ``.dat`` file.

The network is ``dlib_face_recognition_resnet_model_v1`` (Davis King, 2017; released into the
public domain, CC0 1.0, in ``davisking/dlib-models``), the one behind
``dlib.face_recognition_model_v1`` and the ``face_recognition`` package: 150x150 RGB face chips ->
128-d descriptors; two faces are the same person when their descriptors are less than 0.6 apart
(Euclidean). The PyPI package ``face-recognition-models`` ships the file
(``face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat``), so a plain
``pip install`` gives this project an offline face-identity network for CSIM (Zakharov et al. 2019,
section 4, "Metrics") and for an identity term in the content loss.

Network (dlib ``tools/python/src/face_recognition.cpp``, ``anet_type``; read outermost first)::

    loss_metric<fc_no_bias<128, avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>

    alevel4 = ares<32> x3            alevel3 = ares_down<64>,  ares<64> x3
    alevel2 = ares_down<128>, ares<128> x2
    alevel1 = ares_down<256>, ares<256> x2                     alevel0 = ares_down<256>
    ares<N>      = relu(x + affine(con3x3(relu(affine(con3x3(x))))))
    ares_down<N> = relu(avg_pool2x2/2(x) (+) affine(con3x3(relu(affine(con3x3/2(x))))))

29 convolutions. ``affine`` is batch norm folded into a per-channel scale and shift (the file stores
it that way). dlib's layers give the exact arithmetic this module repeats:

* a convolution with stride != 1 (and every pool) has **no padding**; 3x3 stride-1 convolutions pad
  by 1. Sizes: 150 -> 72 (7x7/2) -> 35 (max pool) -> 35 -> 17 -> 8 -> 4 -> 2 -> 1x1x256 after the
  global average -> 128;
* ``add_prev`` adds two tensors of different shapes by zero-padding both to the larger shape,
  aligned at the top-left corner (dlib ``tt::add``). This happens twice: at 8 -> the residual branch
  is 3x3 while the pooled shortcut is 4x4 (and 128 vs 256 channels: the shortcut fills the first
  128), and at 4 -> 1x1 vs 2x2. :func:`add_prev` does the same;
* input: ``(pixel - mean) / 256`` per channel with the means stored in the file
  (122.782, 117.001, 104.298 for R, G, B), pixels on [0, 255];
* the descriptor is the raw ``fc`` output (not normalised; it comes out with a norm close to 1).

Serialization (dlib ``serialize.h``, ``dnn/core.h``, ``dnn/layers.h``, ``cuda/tensor.h``), what
:func:`parse_dat` reads: integers are one control byte (low nibble: number of bytes that follow,
0x80: negative) then that many little-endian magnitude bytes; floats are an integer mantissa and an
integer exponent (``mantissa * 2**exponent``); strings are an integer length then bytes; bools are
the ASCII bytes ``'0'``/``'1'``; tensors are a version (2), ``num_samples, k, nr, nc`` and then
``num_samples*k*nr*nc`` raw little-endian float32. A network is written outermost layer first but
every ``add_layer`` writes its sub-network *before* its own details, so the file holds the loss,
then one version integer per wrapper down to the input, then the layers' details from the input
outwards (``con_4``, ``affine_``, ``relu_``, ``max_pool_2``, ``add_prev_``, ``avg_pool_2``,
``fc_2``...), each followed by its cached buffers. The parser checks every version, name, size,
stride and padding against the architecture above, so any other file is refused with a one-line
:class:`headpuppet.weights.WeightsFormatError`.

Alignment (:func:`chip_transform`, :func:`extract_chips` (numpy, uint8 like dlib),
:func:`align_chips` (torch, batched, differentiable)): dlib's
``get_face_chip_details(shape, 150, 0.25)`` fits a similarity transform (least squares, Umeyama)
from dlib's mean-face template (iBUG points 27-54 and 60-64: nose, eyes, upper lips; eyebrows,
jaw and lower lip ignored) scaled into a 150 px chip with 25 % padding, to the 68 landmarks; then
``extract_image_chip`` samples the chip bilinearly (pixels needing a neighbour outside the image
are black, values truncated to uint8), first shrinking the image with dlib's 5x5 ``pyramid_down<2>``
while the chip's footprint after one more halving still has more pixels than the chip (faces larger
than ~300 px). :func:`extract_chips` repeats all of that, pyramid included; :func:`align_chips` does
it in float with ``grid_sample`` (no uint8 truncation), so gradients reach the image.

Landmark convention: headpuppet's points are continuous pixel coordinates in which pixel ``i``
covers ``[i, i + 1]`` (see :mod:`headpuppet.media.crop`); dlib's have pixel ``i`` centred on ``i``. The
alignment functions take headpuppet points and subtract 0.5 (``dlib_points=True`` to pass dlib's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHTS_NAME = "dlib-resnet"
DAT_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"
#: sha256 of the .dat inside face-recognition-models 0.3.0
DAT_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
SOURCE = ("https://pypi.org/project/face-recognition-models/ (face_recognition_models/models/"
          f"{DAT_FILENAME}; original: http://dlib.net/files/{DAT_FILENAME}.bz2)")
LICENCE = "CC0 1.0 (public domain: Davis King, github.com/davisking/dlib-models)"
PIP_PACKAGE = "face-recognition-models"

CHIP_SIZE = 150
CHIP_PADDING = 0.25
DESCRIPTOR_DIM = 128
#: dlib's rule: descriptors of one person are less than this far apart (Euclidean)
SAME_PERSON_THRESHOLD = 0.6
DEFAULT_MEAN = (122.782, 117.001, 104.298)

#: (filters, downsample) of the residual blocks in forward order (alevel4 ... alevel0)
BLOCKS: tuple[tuple[int, bool], ...] = (
    (32, False), (32, False), (32, False),
    (64, True), (64, False), (64, False), (64, False),
    (128, True), (128, False), (128, False),
    (256, True), (256, False), (256, False),
    (256, True),
)
#: names of the activations :meth:`DlibResNet.features` can return
STAGES = ("stem", "level4", "level3", "level2", "level1", "level0", "descriptor")

# dlib get_face_chip_details: mean face shape of iBUG points 17..67 on [0, 1]
_MEAN_FACE_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689)
_MEAN_FACE_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182)
#: the iBUG points dlib fits (17..67 without the eyebrows 17-26 and the lower lip 55-59, 65-67)
CHIP_POINTS = tuple(i for i in range(17, 68) if not (17 <= i <= 26 or 55 <= i <= 59 or 65 <= i <= 67))


# ============================================================================================
# The network


class Affine(nn.Module):
    """dlib's ``affine`` layer in conv mode: ``x * weight[c] + bias[c]`` (batch norm, folded)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib ``add_prev``: the sum of two ``(B, C, H, W)`` tensors after zero-padding each to the
    larger channel count and size, aligned at channel 0 and the top-left pixel."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t):
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class ResBlock(nn.Module):
    """``ares`` / ``ares_down``: ``relu(shortcut (+) affine(con(relu(affine(con(x))))))``; the
    first convolution has stride 2 and no padding when ``down``, and the shortcut is then a 2x2/2
    average pool (no projection: :func:`add_prev` pads its channels)."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.aff1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)
        self.aff2 = Affine(cout)

    def forward(self, x):
        h = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_prev(h, skip))


class DlibResNet(nn.Module):
    """dlib_face_recognition_resnet_model_v1: ``(B, 3, 150, 150)`` aligned chips in ``[-1, 1]``
    RGB (headpuppet's convention; :meth:`forward_pixels` takes ``[0, 255]``) -> ``(B, 128)``
    descriptors, as ``dlib.face_recognition_model_v1.compute_face_descriptor`` on the same chips.

    The state dict holds ``mean`` (the input means read from the file), ``stem.conv``,
    ``stem.aff``, ``blocks.N.{conv1,aff1,conv2,aff2}`` and ``fc.weight`` ``(128, 256)``.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(DEFAULT_MEAN).view(1, 3, 1, 1))
        self.stem = nn.Module()
        self.stem.conv = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.stem.aff = Affine(32)
        blocks, cin = [], 32
        for cout, down in BLOCKS:
            blocks.append(ResBlock(cin, cout, down))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(256, DESCRIPTOR_DIM, bias=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` RGB -> dlib's input: ``(pixel - mean) / 256`` with pixels on [0, 255]."""
        return ((x + 1.0) * 127.5 - self.mean) / 256.0

    def features(self, x: torch.Tensor, stages: Sequence[str] = ("descriptor",),
                 normalised: bool = False) -> list[torch.Tensor]:
        """Activations at ``stages`` (names in :data:`STAGES`: ``stem`` after the max pool,
        ``level4`` ... ``level0`` after each group of blocks, ``descriptor``), in the order asked.
        ``x``: ``(B, 3, 150, 150)`` in ``[-1, 1]`` (already dlib-normalised when ``normalised``)."""
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise ValueError(f"unknown dlib ResNet stages {bad}; known: {', '.join(STAGES)}")
        want = set(stages)
        last = max(STAGES.index(s) for s in stages)
        found: dict[str, torch.Tensor] = {}
        h = x if normalised else self.normalise(x)
        h = F.max_pool2d(F.relu(self.stem.aff(self.stem.conv(h))), 3, 2)  # (B, 32, 35, 35)
        found["stem"] = h
        if last == 0:
            return [found[s] for s in stages]
        ends = {2: "level4", 6: "level3", 9: "level2", 12: "level1", 13: "level0"}
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i in ends:
                found[ends[i]] = h  # (B, 32, 35, 35) (64, 17, 17) (128, 8, 8) (256, 4, 4) (256, 2, 2)
                if STAGES.index(ends[i]) >= last:
                    break
        if "descriptor" in want:
            found["descriptor"] = self.fc(h.mean((2, 3)))  # avg_pool_everything -> (B, 128)
        return [found[s] for s in stages]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[0]

    def forward_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 150, 150)`` RGB on [0, 255] -> ``(B, 128)``."""
        return self.features((x - self.mean) / 256.0, normalised=True)[0]


def build_dlib_resnet(state_dict: dict[str, torch.Tensor] | None = None,
                      device: str | torch.device = "cpu") -> DlibResNet:
    """A frozen :class:`DlibResNet` in eval mode (random weights when ``state_dict`` is None: tests
    and benchmarks only)."""
    from . import frozen

    return frozen(DlibResNet(), state_dict, "dlib ResNet", device)


# ============================================================================================
# Reading dlib's .dat


class _Reader:
    """dlib's serialization primitives over a byte buffer (see the module docstring)."""

    def __init__(self, data: bytes, path: str):
        self.b = memoryview(data)
        self.i = 0
        self.path = path

    def fail(self, what: str):
        from ..weights import WeightsFormatError

        raise WeightsFormatError(
            f"{self.path} is not dlib's {DAT_FILENAME} (or it is damaged): {what} at byte {self.i}; "
            f"reinstall it with `pip install --force-reinstall {PIP_PACKAGE}` or import an intact copy with "
            f"`headpuppet weights import {WEIGHTS_NAME} FILE`")

    def _take(self, n: int) -> memoryview:
        if n < 0 or self.i + n > len(self.b):
            self.fail(f"file ends early (needs {n} more bytes)")
        out = self.b[self.i:self.i + n]
        self.i += n
        return out

    def int(self, signed: bool = True) -> int:
        ctl = self._take(1)[0]
        size = ctl & (0x0F if signed else 0x8F)
        if size == 0 or size > 8:
            self.fail(f"bad integer control byte 0x{ctl:02x}")
        v = int.from_bytes(self._take(size), "little")
        return -v if signed and ctl & 0x80 else v

    def uint(self) -> int:
        return self.int(signed=False)

    def float(self) -> float:
        if self.i < len(self.b) and self.b[self.i] & 0x70:
            self.fail("old ASCII float format")
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:  # float_details::is_inf / is_ninf / is_nan
            return {32000: math.inf, 32001: -math.inf}.get(exponent, math.nan)
        return math.ldexp(mantissa, exponent)

    def string(self) -> str:
        n = self.uint()
        if n > 256:
            self.fail(f"implausible string length {n}")
        return bytes(self._take(n)).decode("latin-1")

    def bool(self) -> bool:
        c = self._take(1)[0]
        if c not in (ord("0"), ord("1")):
            self.fail(f"bad bool byte 0x{c:02x}")
        return c == ord("1")

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            self.fail("unknown tensor version")
        shape = tuple(self.int() for _ in range(4))
        if any(s < 0 for s in shape):
            self.fail(f"negative tensor shape {shape}")
        n = int(np.prod(shape))
        return np.frombuffer(self._take(4 * n), dtype="<f4").astype(np.float32).reshape(shape)

    def alias_tensor(self) -> tuple[int, ...]:
        if self.int() != 1:
            self.fail("unknown alias_tensor version")
        return tuple(self.int() for _ in range(4))

    def expect(self, value, wanted, what: str):
        if value != wanted:
            self.fail(f"{what} is {value!r}, expected {wanted!r}")
        return value


@dataclass
class DatLayer:
    """One computational layer read from the file (forward order)."""

    kind: str                        # con | affine | relu | max_pool | avg_pool | add_prev | fc
    name: str                        # dlib's version string (con_4, affine_, ...)
    params: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


@dataclass
class DatNetwork:
    """What :func:`parse_dat` found: the input means, the loss settings and the layers in forward order."""

    mean: tuple[float, float, float]
    input_size: tuple[int, int]
    loss: dict
    layers: list[DatLayer]


def _wrappers() -> list[tuple]:
    """The layer wrappers of ``anet_type`` from the outermost (below the loss) to the innermost.

    Entries: ``("tag",)`` / ``("skip",)`` (no data), or ``(kind, **expected)`` for add_layers.
    """
    def ares(n):
        return [("relu",), ("add_prev",), ("affine",), ("con", n, 3, 1), ("relu",), ("affine",),
                ("con", n, 3, 1), ("tag",)]

    def ares_down(n):
        return [("relu",), ("add_prev",), ("avg_pool", 2, 2), ("skip",), ("tag",), ("affine",), ("con", n, 3, 1),
                ("relu",), ("affine",), ("con", n, 3, 2), ("tag",)]

    out = [("fc", DESCRIPTOR_DIM), ("avg_pool", 0, 1)]
    out += ares_down(256)                                      # alevel0
    out += ares(256) + ares(256) + ares_down(256)              # alevel1
    out += ares(128) + ares(128) + ares_down(128)              # alevel2
    out += ares(64) + ares(64) + ares(64) + ares_down(64)      # alevel3
    out += ares(32) + ares(32) + ares(32)                      # alevel4
    out += [("max_pool", 3, 2), ("relu",), ("affine",)]
    return out  # the innermost con<32,7,7,2,2> sits on the input and is read separately


def _read_details(r: _Reader, expected: tuple) -> DatLayer:
    kind = expected[0]
    name = r.string()
    layer = DatLayer(kind, name)
    if kind == "con":
        n, k, stride = expected[1:]
        if name not in ("con_4", "con_5", "con_6"):
            r.fail(f"layer '{name}' where a convolution (con_4..con_6) belongs")
        params = r.tensor()
        filters = r.expect(r.int(), n, "number of filters")
        r.expect(r.int(), k, "filter rows")
        r.expect(r.int(), k, "filter columns")
        r.expect(r.int(), stride, "stride y")
        r.expect(r.int(), stride, "stride x")
        pad = 0 if stride != 1 else k // 2
        r.expect(r.int(), pad, "padding y")
        r.expect(r.int(), pad, "padding x")
        fshape = r.alias_tensor()
        bshape = r.alias_tensor()
        for _ in range(4):
            r.float()  # learning-rate / weight-decay multipliers
        use_bias = r.bool() if name in ("con_5", "con_6") else True
        if name == "con_6":
            r.bool()  # use_relu (fused ReLU; never set in this file)
        cin = fshape[1]
        nf = int(np.prod(fshape))
        if fshape[0] != filters or fshape[2:] != (k, k) or params.size != nf + (filters if use_bias else 0):
            r.fail(f"convolution tensor sizes {fshape}, {bshape}, {params.size} do not fit")
        flat = params.reshape(-1)
        layer.params["weight"] = flat[:nf].reshape(filters, cin, k, k)
        layer.params["bias"] = flat[nf:nf + filters] if use_bias else np.zeros(filters, np.float32)
        layer.info = {"stride": stride, "padding": pad}
    elif kind == "affine":
        if name in ("affine_", "affine_2"):
            params = r.tensor()
            g, b = r.alias_tensor(), r.alias_tensor()
            mode = r.int()
            if name == "affine_2":
                r.bool()  # disabled
            c = int(np.prod(g))
            if mode != 0 or params.size != 2 * c or int(np.prod(b)) != c:  # CONV_MODE == 0
                r.fail(f"affine layer (mode {mode}, {params.size} values) is not a conv-mode affine")
            flat = params.reshape(-1)
            layer.params["weight"], layer.params["bias"] = flat[:c], flat[c:]
        elif name == "bn_con2":  # a batch norm the affine layer is built from (dlib converts it on load)
            params = r.tensor()
            g, b = r.alias_tensor(), r.alias_tensor()
            for _ in range(2):
                r.tensor()  # means, invstds of the last batch
            running_mean, running_var = r.tensor().reshape(-1), r.tensor().reshape(-1)
            r.uint(), r.uint()  # num_updates, running_stats_window_size
            for _ in range(4):
                r.float()
            eps = r.float()
            c = int(np.prod(g))
            flat = params.reshape(-1)
            gamma = flat[:c] / np.sqrt(running_var + eps)
            layer.params["weight"] = gamma.astype(np.float32)
            layer.params["bias"] = (flat[c:2 * c] - gamma * running_mean).astype(np.float32)
        else:
            r.fail(f"layer '{name}' where an affine / batch-norm layer belongs")
    elif kind == "relu":
        if name == "relu_2":
            if r.bool():
                r.fail("a disabled ReLU")
        elif name != "relu_":
            r.fail(f"layer '{name}' where a ReLU belongs")
    elif kind in ("max_pool", "avg_pool"):
        k, stride = expected[1:]
        r.expect(name, f"{kind}_2", "layer")
        r.expect(r.int(), k, f"{kind} rows")
        r.expect(r.int(), k, f"{kind} columns")
        r.expect(r.int(), stride, f"{kind} stride y")
        r.expect(r.int(), stride, f"{kind} stride x")
        r.expect(r.int(), 0, f"{kind} padding y")
        r.expect(r.int(), 0, f"{kind} padding x")
        layer.info = {"size": k, "stride": stride}
    elif kind == "add_prev":
        r.expect(name, "add_prev_", "layer")
    elif kind == "fc":
        if name not in ("fc_2", "fc_3"):
            r.fail(f"layer '{name}' where the fully connected layer belongs")
        n_out = r.expect(r.uint(), expected[1], "fc outputs")
        n_in = r.uint()
        params = r.tensor()
        wshape, _ = r.alias_tensor(), r.alias_tensor()
        r.expect(r.int(), 1, "fc bias mode (FC_NO_BIAS)")
        for _ in range(4):
            r.float()
        if name == "fc_3":
            r.bool()
        if params.size != n_in * n_out or int(np.prod(wshape)) != n_in * n_out:
            r.fail(f"fc weights hold {params.size} values for {n_in}x{n_out}")
        layer.params["weight"] = params.reshape(n_in, n_out).T.copy()  # dlib: x (1, n_in) @ W (n_in, n_out)
    return layer


def _skip_buffers(r: _Reader, version: int, input_layer: bool = False) -> None:
    """The bookkeeping an add_layer writes after its details (flags and cached tensors)."""
    for _ in range(3):
        r.bool()  # this_layer_setup_called, gradient_input_is_stale, get_output_and_gradient_input_disabled
    r.tensor()  # x_grad
    r.tensor()  # cached_output
    if input_layer:
        r.tensor()  # grad_final
        if version >= 3:
            r.int()  # _sample_expansion_factor
    elif version >= 2:
        r.tensor()  # params_grad


def parse_dat(path: str | Path) -> DatNetwork:
    """Read ``dlib_face_recognition_resnet_model_v1.dat`` (a serialized ``anet_type``).

    Raises :class:`headpuppet.weights.WeightsFormatError` (one line, naming the fix) for anything
    that is not that network, including truncated files.
    """
    from ..weights import WeightsFormatError

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WeightsFormatError(f"cannot read {path}: {exc.strerror or exc}") from None
    r = _Reader(data, str(path))
    r.expect(r.int(), 1, "add_loss_layer version")
    loss_name = r.string()
    loss: dict = {"name": loss_name}
    if loss_name == "loss_metric_2":
        loss["margin"], loss["distance_threshold"] = r.float(), r.float()
    elif loss_name != "loss_metric_":
        r.fail(f"loss '{loss_name}' where loss_metric belongs")
    wrappers = _wrappers()
    versions = []
    for w in wrappers:
        v = r.int()
        if w[0] in ("tag", "skip"):
            r.expect(v, 1, f"{w[0]} layer version")
        elif v not in (1, 2):
            r.fail(f"add_layer version {v}")
        versions.append(v)
    v_in = r.int()
    if v_in not in (2, 3):
        r.fail(f"input add_layer version {v_in}")
    r.expect(r.string(), "input_rgb_image_sized", "input layer")
    mean = (r.float(), r.float(), r.float())
    size = (r.uint(), r.uint())
    r.expect(size, (CHIP_SIZE, CHIP_SIZE), "input size")
    layers = [_read_details(r, ("con", 32, 7, 2))]
    _skip_buffers(r, v_in, input_layer=True)
    for w, v in zip(reversed(wrappers), reversed(versions)):
        if w[0] in ("tag", "skip"):
            continue
        layers.append(_read_details(r, w))
        _skip_buffers(r, v)
    if r.i != len(r.b):
        r.fail(f"{len(r.b) - r.i} unexpected bytes after the network")
    if not all(np.isfinite(p).all() for layer in layers for p in layer.params.values()):
        raise WeightsFormatError(f"{path} holds non-finite weights; reinstall it with "
                                 f"`pip install --force-reinstall {PIP_PACKAGE}`")
    return DatNetwork(mean=mean, input_size=size, loss=loss, layers=layers)


def convert_dlib_dat(path: str | Path) -> dict[str, torch.Tensor]:
    """``dlib_face_recognition_resnet_model_v1.dat`` -> :class:`DlibResNet` state dict (float32)."""
    from ..weights import WeightsFormatError

    net = parse_dat(path)
    params = [layer for layer in net.layers if layer.params]
    names = ["stem.conv", "stem.aff"]
    for i in range(len(BLOCKS)):
        names += [f"blocks.{i}.conv1", f"blocks.{i}.aff1", f"blocks.{i}.conv2", f"blocks.{i}.aff2"]
    names.append("fc")
    if len(params) != len(names):  # cannot happen after parse_dat's checks; belt and braces
        raise WeightsFormatError(f"{path}: {len(params)} parameter layers, expected {len(names)}")
    out = {"mean": torch.tensor(net.mean, dtype=torch.float32).view(1, 3, 1, 1)}
    for name, layer in zip(names, params):
        for key, value in layer.params.items():
            out[f"{name}.{key}"] = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
    expected = DlibResNet().state_dict()
    for key, ref in expected.items():
        if key not in out or tuple(out[key].shape) != tuple(ref.shape):
            got = tuple(out[key].shape) if key in out else "nothing"
            raise WeightsFormatError(f"{path}: {key} is {got}, expected {tuple(ref.shape)}")
    return out


# ============================================================================================
# Finding the file, the weights spec, loading


def locate_dat() -> Path | None:
    """The ``.dat`` inside the installed ``face-recognition-models`` package, or None.

    Found with ``importlib.util.find_spec`` without importing the package: its ``__init__`` imports
    ``pkg_resources``, which setuptools >= 81 no longer ships, so
    ``face_recognition_models.face_recognition_model_location()`` fails on new environments.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        p = Path(folder) / "models" / DAT_FILENAME
        if p.is_file():
            return p
    return None


def _convert(path):  # module-level so the manifest names it
    return convert_dlib_dat(path)


def dlib_resnet_spec():
    """The :class:`headpuppet.protocols.WeightSpec` of ``dlib-resnet`` (registered by the metrics plugin)."""
    from ..protocols import WeightSpec

    return WeightSpec(
        name=WEIGHTS_NAME,
        description="dlib face-recognition ResNet (29 conv, 150 px chips -> 128-d), for CSIM (dlib) "
                    "and the dlib-identity loss",
        source=SOURCE,
        source_sha256=DAT_SHA256,
        licence=LICENCE,
        converter=_convert,
        filename=DAT_FILENAME,
        extra={"title": "dlib face ResNet", "locate": locate_dat, "pip": PIP_PACKAGE,
               "sha256_note": f"full sha256 of the file in {PIP_PACKAGE} 0.3.0"},
    )


def load_state(weights_dir: str | Path | None = None, device: str | torch.device = "cpu") -> dict:
    """The converted state dict, converting the installed package's ``.dat`` on first use.

    Raises :class:`headpuppet.errors.WeightsMissingError` (package absent, nothing imported) or a
    :class:`headpuppet.weights.WeightsError` (damaged file), each one line naming the fix.
    """
    from ..weights import ensure, load_weights

    ensure(dlib_resnet_spec(), weights_dir)
    return load_weights(WEIGHTS_NAME, weights_dir, device=str(device), title="dlib face ResNet")


def load_dlib_resnet(weights_dir: str | Path | None = None, device: str | torch.device = "cpu") -> DlibResNet:
    """A frozen :class:`DlibResNet` with the real weights (see :func:`load_state`)."""
    return build_dlib_resnet(load_state(weights_dir), device=device)


# ============================================================================================
# Alignment: dlib's get_face_chip_details + extract_image_chip


def _template(size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    idx = np.asarray(CHIP_POINTS) - 17
    xy = np.stack([np.asarray(_MEAN_FACE_X)[idx], np.asarray(_MEAN_FACE_Y)[idx]], 1)
    return (padding + xy) / (2 * padding + 1) * size  # (N, 2) chip pixels


@dataclass
class ChipDetails:
    """dlib's ``chip_details`` of one face: a rectangle ``(left, top, right, bottom)`` in image
    pixels (dlib convention), rotated by ``angle`` about its centre, sampled into ``size`` pixels."""

    rect: tuple[float, float, float, float]
    angle: float
    size: int

    def corners(self, rect=None) -> np.ndarray:
        """Rotated (tl, tr, bl) corners of ``rect`` (default: this one)."""
        l, t, r, b = self.rect if rect is None else rect
        c = np.array([(l + r) / 2, (t + b) / 2])
        rot = np.array([[math.cos(self.angle), -math.sin(self.angle)], [math.sin(self.angle), math.cos(self.angle)]])
        pts = np.array([[l, t], [r, t], [l, b]]) - c
        return pts @ rot.T + c


def chip_details(points: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING,
                 dlib_points: bool = False) -> list[ChipDetails]:
    """dlib's ``get_face_chip_details(shape, size, padding)`` for ``(68, 2)`` or ``(B, 68, 2)`` points."""
    p = np.asarray(points, np.float64)
    p = p[None] if p.ndim == 2 else p
    if p.shape[1:] != (68, 2):
        raise ValueError(f"expected (B, 68, 2) landmarks, got {p.shape}")
    if not dlib_points:
        p = p - 0.5
    src = _template(size, padding)                  # chip points (from)
    dst = p[:, list(CHIP_POINTS)]                   # image points (to)
    sm, dm = src.mean(0), dst.mean(1)               # (2,), (B, 2)
    sc, dc = src - sm, dst - dm[:, None]
    var = (sc ** 2).sum()
    # least-squares similarity chip -> image, M = [[a, -b], [b, a]] (= Umeyama in 2D)
    a = (sc[None, :, 0] * dc[..., 0] + sc[None, :, 1] * dc[..., 1]).sum(1) / var
    b = (sc[None, :, 0] * dc[..., 1] - sc[None, :, 1] * dc[..., 0]).sum(1) / var
    out = []
    for ai, bi, dmi in zip(a, b, dm):
        m = np.array([[ai, -bi], [bi, ai]])
        t = dmi - m @ sm
        angle = math.atan2(bi, ai)
        scale = math.hypot(ai, bi)
        cx, cy = m @ np.array([size / 2.0, size / 2.0]) + t
        half = (size * scale - 1) / 2  # dlib centered_drect: width - 1 between the corners
        out.append(ChipDetails((cx - half, cy - half, cx + half, cy + half), angle, size))
    return out


def _rect_down(rect):
    # dlib pyramid_down<2>::point_down(p) = p / 2 - (1.25, 0.75)
    l, t, r, b = rect
    return (l / 2 - 1.25, t / 2 - 0.75, r / 2 - 1.25, b / 2 - 0.75)


def _area(rect) -> float:
    l, t, r, b = rect
    return max(0.0, r - l + 1) * max(0.0, b - t + 1)


def _plan(det: ChipDetails, hw: tuple[int, int]):
    """dlib extract_image_chips for one chip: (pyramid levels, bounding box, rect in level coords)."""
    H, W = hw
    area = det.size * det.size
    depth, grow = 0, 2.0
    rect = _rect_down(det.rect)
    while _area(rect) > area:
        rect = _rect_down(rect)
        depth += 1
        grow = grow * 2 + 2
    l, t, r, b = det.rect
    c = np.array([(l + r) / 2, (t + b) / 2])
    rot = np.array([[math.cos(det.angle), -math.sin(det.angle)], [math.sin(det.angle), math.cos(det.angle)]])
    corners = (np.array([[l, t], [r, t], [l, b], [r, b]]) - c) @ rot.T + c
    x0, y0 = corners.min(0) - grow
    x1, y1 = corners.max(0) + grow
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W - 1), min(y1, H - 1)
    bbox = tuple(int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5)) for v in (x0, y0, x1, y1))  # lround
    level = -1
    rect = (l - bbox[0], t - bbox[1], r - bbox[0], b - bbox[1])
    while _area(_rect_down(rect)) > area:
        level += 1
        rect = _rect_down(rect)
    return depth, bbox, level, rect


def _affine_from_corners(corners: np.ndarray, size: int) -> np.ndarray:
    """(2, 3) matrix mapping chip pixel (u, v, 1) to the image through tl, tr, bl corners."""
    tl, tr, bl = corners
    n = size - 1
    return np.array([[(tr[0] - tl[0]) / n, (bl[0] - tl[0]) / n, tl[0]],
                     [(tr[1] - tl[1]) / n, (bl[1] - tl[1]) / n, tl[1]]])


def pyramid_down(img: np.ndarray) -> np.ndarray:
    """dlib ``pyramid_down<2>`` on an ``(H, W, 3)`` uint8 image: 5x5 ``[1 4 6 4 1]^2 / 256`` filter,
    every other pixel, integer arithmetic -> ``((H - 3) // 2, (W - 3) // 2, 3)`` uint8."""
    x = img.astype(np.int64)
    H, W = x.shape[:2]
    wc, hr = (W - 3) // 2, (H - 3) // 2
    k = (1, 4, 6, 4, 1)
    tmp = sum(k[j] * x[:, j:j + 2 * wc:2] for j in range(5))            # (H, wc, 3)
    down = sum(k[j] * tmp[j:j + 2 * hr:2] for j in range(5))            # (hr, wc, 3)
    return (down // 256).astype(np.uint8)


def _bilinear_uint8(img: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """dlib transform_image with interpolate_bilinear: chip (u, v) samples ``img`` at ``m @ (u, v, 1)``;
    black where a neighbour is outside; values truncated to uint8."""
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    x = m[0, 0] * u + m[0, 1] * v + m[0, 2]
    y = m[1, 0] * u + m[1, 1] * v + m[1, 2]
    H, W = img.shape[:2]
    left, top = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    ok = (left >= 0) & (top >= 0) & (left + 1 < W) & (top + 1 < H)
    lc, tc = np.clip(left, 0, max(W - 2, 0)), np.clip(top, 0, max(H - 2, 0))
    fx, fy = (x - left)[..., None], (y - top)[..., None]
    f = img.astype(np.float64)
    tl, tr = f[tc, lc], f[tc, lc + 1]
    bl, br = f[tc + 1, lc], f[tc + 1, lc + 1]
    val = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    out = np.where(ok[..., None], val, 0.0)
    return out.astype(np.uint8)  # static_cast<unsigned char>: truncation


def extract_chips(images: np.ndarray, points: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING,
                  dlib_points: bool = False) -> np.ndarray:
    """Aligned face chips exactly as ``dlib.get_face_chip(img, shape, size, padding)``.

    ``images``: ``(B, H, W, 3)`` (or one ``(H, W, 3)``) uint8 RGB; ``points``: ``(B, 68, 2)`` (or
    ``(68, 2)``) headpuppet landmarks (dlib's with ``dlib_points=True``) -> ``(B, size, size, 3)`` uint8.
    """
    images = np.asarray(images)
    single = images.ndim == 3
    if single:
        images, points = images[None], np.asarray(points)[None]
    dets = chip_details(points, size, padding, dlib_points)
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, (img, det) in enumerate(zip(images, dets)):
        depth, bbox, level, rect = _plan(det, img.shape[:2])
        sub = img[bbox[1]:bbox[3] + 1, bbox[0]:bbox[2] + 1]
        if level >= 0:
            for _ in range(level + 1):
                sub = pyramid_down(sub)
        out[i] = _bilinear_uint8(sub, _affine_from_corners(det.corners(rect), size), size)
    return out[0] if single else out


def chip_affines(points: np.ndarray, hw: tuple[int, int], size: int = CHIP_SIZE, padding: float = CHIP_PADDING,
                 dlib_points: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For :func:`align_chips`: per face, the (2, 3) chip -> image map on the image (level -1) or on
    its pyramid level, the pyramid level (-1: none) and the sub-image origin ``(x0, y0)`` the
    pyramid starts from."""
    dets = chip_details(points, size, padding, dlib_points)
    mats, levels, origins = [], [], []
    for det in dets:
        _, bbox, level, rect = _plan(det, hw)
        if level < 0:  # sample the whole image: same positions as in the sub-image, shifted back
            rect = det.rect
            bbox = (0, 0, 0, 0)
        mats.append(_affine_from_corners(det.corners(rect), size))
        levels.append(level)
        origins.append(bbox[:2])
    return np.stack(mats), np.asarray(levels), np.asarray(origins)


def _pyramid_down_torch(x: torch.Tensor) -> torch.Tensor:
    """Float ``pyramid_down<2>`` (no integer truncation): ``(B, C, H, W)`` -> ``(B, C, (H-3)//2, (W-3)//2)``."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device)
    w = (k[:, None] * k[None, :] / 256.0).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(x, w.contiguous(), stride=2, groups=x.shape[1])


def _sample(x: torch.Tensor, m: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear chips of ``x`` (B, C, H, W) at ``m`` (B, 2, 3) (chip pixel -> image pixel, dlib
    convention), zero where a neighbour lies outside (as dlib)."""
    B, _, H, W = x.shape
    r = torch.arange(size, dtype=m.dtype, device=m.device)
    v, u = torch.meshgrid(r, r, indexing="ij")
    uv1 = torch.stack([u, v, torch.ones_like(u)], -1).view(1, -1, 3)        # (1, S*S, 3)
    xy = uv1 @ m.transpose(1, 2)                                            # (B, S*S, 2) image pixels
    gx = xy[..., 0] * (2.0 / max(W - 1, 1)) - 1.0
    gy = xy[..., 1] * (2.0 / max(H - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], -1).view(B, size, size, 2).to(x.dtype)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    fx, fy = torch.floor(xy[..., 0]), torch.floor(xy[..., 1])
    ok = (fx >= 0) & (fy >= 0) & (fx + 1 < W) & (fy + 1 < H)
    return out * ok.view(B, 1, size, size).to(out.dtype)


def align_chips(images: torch.Tensor, points, size: int = CHIP_SIZE, padding: float = CHIP_PADDING,
                dlib_points: bool = False) -> torch.Tensor:
    """Batched, differentiable dlib alignment: ``(B, 3, H, W)`` images (any range; headpuppet's
    ``[-1, 1]``) and ``(B, 68, 2)`` landmarks (numpy or tensor; no gradient flows into them) ->
    ``(B, 3, size, size)`` chips in the images' range, by ``grid_sample``.

    Same geometry as :func:`extract_chips` (and dlib); differences: float values (no uint8
    truncation, which lowers dlib's chips by 0.5 grey level on average) and, for faces large enough to
    need dlib's image pyramid, the pyramid runs in float. Samples that need a pixel outside the image
    are 0 in pixel space, i.e. ``-1`` in ``[-1, 1]`` images.
    """
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    B, _, H, W = images.shape
    mats, levels, origins = chip_affines(np.asarray(points), (H, W), size, padding, dlib_points)
    m = torch.as_tensor(mats, dtype=torch.float32, device=images.device)
    # sample in pixel space so that "outside" is black, as in dlib, whatever the images' range
    lo = -1.0
    x = images - lo
    out = x.new_zeros(B, images.shape[1], size, size)
    flat = np.flatnonzero(levels < 0)
    if len(flat):
        idx = torch.as_tensor(flat, device=images.device)
        out = out.index_copy(0, idx, _sample(x.index_select(0, idx), m.index_select(0, idx), size))
    for i in np.flatnonzero(levels >= 0):  # big faces: dlib's pyramid, one face at a time
        x0, y0 = (int(v) for v in origins[i])
        sub = x[i:i + 1, :, y0:, x0:]
        for _ in range(int(levels[i]) + 1):
            sub = _pyramid_down_torch(sub)
        out = out.index_copy(0, torch.tensor([int(i)], device=images.device), _sample(sub, m[i:i + 1], size))
    return out + lo


# ============================================================================================
# Identity loss network (a perceptual network for the content loss)


#: default stages compared by the dlib-identity loss: the deepest ones, which separate people best
#: (mean L1 between two frames of one video vs of two people, 12 shared videos at 128 px: level3 0.89
#: vs 1.12, level1 0.21 vs 0.31, level0 0.17 vs 0.30, descriptor 0.027 vs 0.054)
IDENTITY_STAGES = ("level1", "level0", "descriptor")
#: the descriptor's factor in DlibIdentity: sqrt(128), so its mean |difference| is ~0.8x dlib's distance
DESCRIPTOR_SCALE = math.sqrt(DESCRIPTOR_DIM)


#: The face-centred square used when no landmarks are given, ``(cx, cy, side)`` as fractions of
#: the frame's width / height / smaller side: the median of dlib's chip rectangle over headpuppet
#: training crops (``face_crop_box`` defaults) of the shared face videos; bench/identity_loss.py
#: measures it and how far its descriptors are from the aligned ones.
FIXED_CROP = (0.514, 0.515, 0.661)


class DlibIdentity(nn.Module):
    """A perceptual network for the content loss from dlib's face ResNet (``dlib-identity``).

    ``forward(x (B, 3, H, W) in [-1, 1], points=None) -> list[Tensor]``: the activations at
    ``layers`` (names in :data:`STAGES` or their indices, as ``loss.perceptual_layers`` takes
    integers; default :data:`IDENTITY_STAGES` = ``[4, 5, 6]``: the last two residual stages and the
    128-d descriptor, the latter times :data:`DESCRIPTOR_SCALE` so that its L1 term reads about
    0.8x dlib's distance) of the face chip of each image. With ``points`` ``(B, 68, 2)`` the chip is
    dlib's alignment (:func:`align_chips`); without (how :class:`headpuppet.losses.ContentLoss` calls
    it today) it is the fixed face-centred square :data:`FIXED_CROP` resized to 150 px, which suits
    headpuppet's landmark-centred training crops: on the 128 px crops of the 51 shared training
    videos its descriptors are at cosine 0.987 (median; dlib distance 0.24, worst 0.78 on turned or
    tilted heads) from those of dlib's alignment of the same frame, about the spread between two
    frames of one video (0.982). The content loss takes the L1 distance of each pair of activations
    (feature matching; on the descriptor, L1 of dlib's identity embedding). :meth:`cosine_loss` is
    ``1 - cos`` of the descriptors, for direct use. ``default_weight`` is a starting point, not tuned.

    Frozen, eval mode; gradients flow to ``x`` only.
    """

    default_weight: float = 1e-1
    weights: tuple[str, ...] = (WEIGHTS_NAME,)
    #: forward takes ``points=``: a content loss may pass the targets' landmarks for dlib's alignment
    accepts_points: bool = True

    def __init__(self, net: DlibResNet, layers: Sequence[str] | None = None, crop: Sequence[float] | None = None):
        super().__init__()
        layers = tuple(IDENTITY_STAGES if layers is None else layers)
        # the config's perceptual_layers are integers: index into STAGES (2, 3, 4, 6 = the default)
        layers = tuple(STAGES[v] if isinstance(v, int) and 0 <= v < len(STAGES) else v for v in layers)
        bad = [s for s in layers if s not in STAGES]
        if bad or not layers:
            raise ValueError(f"dlib-identity layers must be names among {', '.join(STAGES)} or their indices "
                             f"0..{len(STAGES) - 1}; got {list(layers)}")
        self.net = net
        self.layers = layers
        self.crop = tuple(float(v) for v in (crop or FIXED_CROP))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "DlibIdentity":
        return super().train(False)

    def chips(self, x: torch.Tensor, points=None) -> torch.Tensor:
        """``(B, 3, 150, 150)`` chips in [-1, 1] (aligned with ``points``, else the fixed crop)."""
        if points is not None:
            return align_chips(x, points)
        H, W = x.shape[-2:]
        cx, cy, side = self.crop
        s = side * min(H, W)
        y0, x0 = cy * H - s / 2, cx * W - s / 2
        # continuous box [x0, x0 + s] -> 150 pixel centres, bilinear (antialiased when shrinking a lot)
        theta = x.new_tensor([[s / W, 0.0, (2 * x0 + s) / W - 1.0], [0.0, s / H, (2 * y0 + s) / H - 1.0]])
        if s > 2 * CHIP_SIZE:  # keep bilinear sampling from aliasing on large frames
            f = CHIP_SIZE / s
            x = F.interpolate(x, size=(max(2, round(H * f)), max(2, round(W * f))), mode="bilinear",
                              antialias=True, align_corners=False)
        grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), [x.shape[0], 3, CHIP_SIZE, CHIP_SIZE],
                             align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def forward(self, x: torch.Tensor, points=None) -> list[torch.Tensor]:
        acts = self.net.features(self.chips(x, points), self.layers)
        return [a * DESCRIPTOR_SCALE if s == "descriptor" else a for s, a in zip(self.layers, acts)]

    def descriptors(self, x: torch.Tensor, points=None) -> torch.Tensor:
        return self.net.features(self.chips(x, points), ("descriptor",))[0]

    def cosine_loss(self, fake: torch.Tensor, real: torch.Tensor, points=None) -> torch.Tensor:
        """``mean(1 - cos(d(fake), d(real)))``; ``real`` is a constant target."""
        with torch.no_grad():
            target = self.descriptors(real, points)
        return (1.0 - F.cosine_similarity(self.descriptors(fake, points), target, dim=1)).mean()

"""Reading dlib's ``.dat`` serialization of the face-recognition ResNet into a
:class:`~headpuppet.nets.dlib_resnet.network.DlibResNet` state dict.

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
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...weights import WeightsFormatError
from .network import BLOCKS, CHIP_SIZE, DESCRIPTOR_DIM, DlibResNet

WEIGHTS_NAME = "dlib-resnet"
DAT_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"
#: sha256 of the .dat inside face-recognition-models 0.3.0
DAT_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
SOURCE = ("https://pypi.org/project/face-recognition-models/ (face_recognition_models/models/"
          f"{DAT_FILENAME}; original: http://dlib.net/files/{DAT_FILENAME}.bz2)")
LICENCE = "CC0 1.0 (public domain: Davis King, github.com/davisking/dlib-models)"
PIP_PACKAGE = "face-recognition-models"


class _Reader:
    """dlib's serialization primitives over a byte buffer (see the module docstring)."""

    def __init__(self, data: bytes, path: str):
        self.b = memoryview(data)
        self.i = 0
        self.path = path

    def fail(self, what: str):
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

"""Building blocks of the three networks (Zakharov et al. 2019, section 4 "Implementation details").

The paper builds every network from BigGAN-style residual blocks (Brock et al. 2019, appendix B):

* :class:`ResBlockDown` -- the down-sampling block of the embedder, of the discriminator (no
  normalisation) and of the generator's landmark encoder (with instance normalisation);
* :class:`ResBlock` / :class:`ResBlockUp` -- the generator's bottleneck and up-sampling blocks,
  normalised by :class:`AdaIN` whose per-person scale and bias are slices of ``psi = P e``;
* :class:`SelfAttention` -- SAGAN's non-local block (Zhang et al. 2019), inserted at 32x32 in every
  down-sampling path and at 64x64 in the generator's up-sampling path;
* spectral normalisation (Miyato et al. 2018) on every convolution and linear layer.

Every layer that carries AdaIN parameters says how many it consumes (``num_adain_params``) and
takes its slice of ``psi`` as ``forward(x, params)``; the generator hands out the slices in order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from ..errors import ConfigError

__all__ = [
    "conv", "linear", "avg_pool2", "instance_norm", "InstanceNorm", "AdaIN", "SelfAttention", "ResBlockDown",
    "ResBlock", "ResBlockUp", "UpsampleConv", "low_res_upsampling", "pooled_conv", "strided_downsampling",
    "PackedConv2d", "prepack_convolutions", "norm_relu", "relu_of_norm",
    "has_spectral_norm",
]


def conv(in_ch: int, out_ch: int, kernel_size: int = 3, sn: bool = True, bias: bool = True) -> nn.Conv2d:
    """A same-padded convolution, spectral-normalised when ``sn`` (the paper normalises every conv)."""
    layer = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=bias)
    return _spectral_norm(layer) if sn else layer


def linear(in_features: int, out_features: int, sn: bool = True, bias: bool = True) -> nn.Linear:
    """A linear layer, spectral-normalised when ``sn`` (the paper normalises every linear layer)."""
    layer = nn.Linear(in_features, out_features, bias=bias)
    return _spectral_norm(layer) if sn else layer


def has_spectral_norm(layer: nn.Module) -> bool:
    """Whether ``layer.weight`` is computed through a spectral-norm parametrisation."""
    if not parametrize.is_parametrized(layer, "weight"):
        return False
    return any(type(p).__name__ == "_SpectralNorm" for p in layer.parametrizations["weight"])


def avg_pool2(x: torch.Tensor) -> torch.Tensor:
    """``F.avg_pool2d(x, 2)``: the mean of each 2x2 block, for even H and W as two strided sums
    (4-6x faster forward and 1.4x faster forward + backward than the pooling kernel on CPU, equal
    up to float rounding); the pooling kernel otherwise."""
    if x.dim() != 4 or x.shape[-1] % 2 or x.shape[-2] % 2:
        return F.avg_pool2d(x, 2)
    cols = x[..., 0::2] + x[..., 1::2]                                  # (B, C, H, W/2)
    return (cols[..., 0::2, :] + cols[..., 1::2, :]) * 0.25             # (B, C, H/2, W/2)


def relu_of_norm(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """ReLU of ``h``, a normalisation's output for the input ``x``: in place when no gradient is
    recorded (inference) and the norm made a new tensor (an ``nn.Identity`` norm hands back ``x``,
    which the block still needs for its shortcut); a new tensor otherwise."""
    return F.relu(h, inplace=h is not x and not torch.is_grad_enabled())


#: whether this torch has oneDNN's convolution with a fused element-wise add (what inductor's CPU
#: fusions call); set to False by :func:`conv_add` if it ever fails
_FUSED_CONV_ADD = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _fusable(conv: nn.Module, x: torch.Tensor, other: torch.Tensor) -> bool:
    """``conv(x) + other`` can be one oneDNN call: inference on a CPU, a plain undilated Conv2d (or
    :class:`PackedConv2d`), channels-last tensors all in the conv's dtype, ``other`` of the output's shape; not while
    :func:`torch.compile` traces (inductor fuses the plain expression itself)."""
    if not _FUSED_CONV_ADD or torch.is_grad_enabled() or type(conv) not in (nn.Conv2d, PackedConv2d) \
            or torch.compiler.is_compiling():
        return False
    dtype = conv.dtype if isinstance(conv, PackedConv2d) else conv.weight.dtype
    if x.dim() != 4 or isinstance(conv.padding, str) or conv.dilation != (1, 1):
        return False
    out_hw = tuple((n + 2 * p - k) // s + 1 for n, p, k, s in zip(x.shape[2:], conv.padding, conv.kernel_size, conv.stride))
    return (x.device.type == "cpu" and conv.padding_mode == "zeros" and conv.groups == 1
            and x.dtype == dtype == other.dtype and x.dtype in (torch.float32, torch.bfloat16)
            and other.shape == (x.shape[0], conv.out_channels, *out_hw)
            and x.is_contiguous(memory_format=torch.channels_last)
            and other.is_contiguous(memory_format=torch.channels_last))


def conv_add(conv: nn.Module, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``conv(x) + other`` (a residual block's sum). At inference on a CPU with channels-last
    tensors in the conv's own dtype (the render fast path: folded weights, bf16 or fp32, a
    :class:`PackedConv2d` included), one oneDNN convolution that adds ``other`` as it writes its output, instead of a convolution and then an
    add over the whole activation; the plain expression everywhere else (training included)."""
    global _FUSED_CONV_ADD
    if _fusable(conv, x, other):
        try:
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, other, conv.packed if isinstance(conv, PackedConv2d) else conv.weight, conv.bias,
                list(conv.padding), list(conv.stride), list(conv.dilation),
                conv.groups, "add", None, None, [], None)
        except RuntimeError:  # a build or input this kernel does not take: the plain sum from now on
            _FUSED_CONV_ADD = False
    return conv(x) + other


def _channels_last_inference(x: torch.Tensor) -> bool:
    """A 4-d channels-last CPU tensor outside autograd (the per-sample batch-norm path is measured on
    CPU only, where one call per sample costs little; it has no gradient for the statistics, so
    training takes ``F.instance_norm``)."""
    return (x.device.type == "cpu" and x.dim() == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
            and not (torch.is_grad_enabled() and x.requires_grad))


#: whether :func:`instance_norm` may compute ``ReLU(IN(x) * scale + bias)`` of a large bf16
#: channels-last sample at inference as its statistics and then one oneDNN pass (below); set to False
#: if that ever fails here
_FUSED_NORM_RELU = _FUSED_CONV_ADD
#: the fewest elements per sample for that fused pass: on 2 cores (AMX) it took 0.55x the time of the
#: batch-norm kernel and an in-place ReLU for 64 x 256 x 256 and 128 x 128 x 128 bf16 samples, about
#: the same for 128 x 64 x 64 and 1.1-1.5x for 32 x 32 and smaller (the extra small ops' dispatch)
FUSED_NORM_RELU_MIN_ELEMENTS = 1 << 20


def _norm_relu_fusable(x: torch.Tensor) -> bool:
    return (_FUSED_NORM_RELU and x.dtype == torch.bfloat16 and x[0].numel() >= FUSED_NORM_RELU_MIN_ELEMENTS
            and not torch.compiler.is_compiling())


def _fused_norm_relu(x: torch.Tensor, eps: float, scale: torch.Tensor | None,
                     bias: torch.Tensor | None) -> torch.Tensor:
    """``ReLU(IN(x) * scale + bias)`` for one channels-last sample ``x`` ``(1, C, H, W)``: its
    statistics (``torch.batch_norm_update_stats``, float32, one read of ``x``), then one oneDNN
    depthwise 1x1 convolution with the per-channel scale and shift as weight and bias and a fused ReLU
    (one read, one write): three passes over memory instead of five (the batch-norm kernel's
    statistics and output, then ReLU's). The scale and shift are rounded to ``x``'s dtype: within
    two bf16 steps of the unfused result."""
    c, n = x.shape[1], x.shape[2] * x.shape[3]
    mean, var = x.new_zeros(c, dtype=torch.float32), x.new_zeros(c, dtype=torch.float32)
    torch.batch_norm_update_stats(x, mean, var, 1.0)          # var unbiased (running statistics)
    k = torch.rsqrt(var * ((n - 1) / n) + eps)
    if scale is not None:
        k = k * scale.reshape(c).float()
    shift = -mean * k
    if bias is not None:
        shift = shift + bias.reshape(c).float()
    return torch.ops.mkldnn._convolution_pointwise(x, k.to(x.dtype).reshape(c, 1, 1, 1), shift.to(x.dtype),
                                                   [0, 0], [1, 1], [1, 1], c, "relu", [], "")


def instance_norm(x: torch.Tensor, eps: float, scale: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None, relu: bool = False) -> torch.Tensor:
    """``IN(x) * scale + bias`` (``scale``/``bias`` broadcast against ``(B, C, 1, 1)``; None: 1 / 0),
    and its ReLU when ``relu``.

    ``F.instance_norm`` for ordinary tensors and under autograd (training). For channels-last ``x``
    at inference (the render fast path), the same function computed per sample by the batch-norm
    kernel, which keeps ``x``'s dtype and memory format: ``F.instance_norm`` would copy a
    channels-last input to contiguous, and under bf16 autocast to float32 and back (43% of the
    paper-256 G's time in bf16 on CPU). With ``relu`` on that path, a large bf16 sample
    (:data:`FUSED_NORM_RELU_MIN_ELEMENTS`) takes :func:`_fused_norm_relu`, and the others an in-place
    ReLU (:func:`relu_of_norm`)."""
    if not _channels_last_inference(x):
        out = F.instance_norm(x, eps=eps)
        if scale is not None:
            out = out * scale
        out = out + bias if bias is not None else out
        return relu_of_norm(out, x) if relu else out
    b, c = x.shape[:2]
    if relu and _norm_relu_fusable(x):
        global _FUSED_NORM_RELU
        try:
            out = [_fused_norm_relu(x[i:i + 1], eps, None if scale is None else scale[i if len(scale) > 1 else 0],
                                    None if bias is None else bias[i if len(bias) > 1 else 0]) for i in range(b)]
            return out[0] if b == 1 else torch.cat(out)
        except RuntimeError:  # a build or input this kernel does not take: the batch-norm kernel from now on
            _FUSED_NORM_RELU = False
    # per sample, the batch-norm kernel (a sample is a batch of one): it reads channels-last natively
    # and normalises, scales and shifts in one pass; var_mean over (H, W) alone is 5-10x slower here
    if b == 1:  # one call on x itself; the fewest small ops (each costs dispatch time at batch 1)
        out = torch.native_batch_norm(x, None if scale is None else scale.reshape(c).float(),
                                      None if bias is None else bias.reshape(c).float(),
                                      None, None, True, 0.0, eps)[0]
    else:
        scale = scale.float().expand(b, c, 1, 1) if scale is not None else torch.ones(b, c, 1, 1, device=x.device)
        bias = bias.float().expand(b, c, 1, 1) if bias is not None else torch.zeros(b, c, 1, 1, device=x.device)
        out = torch.cat([torch.native_batch_norm(x[i:i + 1], scale[i].reshape(c), bias[i].reshape(c), None, None,
                                                 True, 0.0, eps)[0] for i in range(b)])
    return relu_of_norm(out, x) if relu else out


def norm_relu(norm: nn.Module, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
    """``ReLU(norm(x, *params))``: :class:`AdaIN` and :class:`InstanceNorm` compute it themselves
    (fused on the render fast path, :func:`instance_norm`), any other norm (``nn.Identity`` in the
    blocks without normalisation) through :func:`relu_of_norm`."""
    if isinstance(norm, (AdaIN, InstanceNorm)):
        return norm(x, *params, relu=True)
    return relu_of_norm(norm(x, *params), x)


class InstanceNorm(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (affine, no running statistics) computed by :func:`instance_norm`, so a
    channels-last input stays channels-last; same parameters and state dict. ``relu``: its ReLU."""

    def forward(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        if self.track_running_stats or not _channels_last_inference(x):
            out = super().forward(x)
            return relu_of_norm(out, x) if relu else out
        w = self.weight.reshape(1, -1, 1, 1) if self.affine else None
        b = self.bias.reshape(1, -1, 1, 1) if self.affine else None
        return instance_norm(x, self.eps, w, b, relu=relu)


class AdaIN(nn.Module):
    """Adaptive instance normalisation (Huang & Belongie 2017): ``scale * IN(x) + bias``.

    ``scale`` and ``bias`` are not parameters of this layer: they are the person-specific slice
    of ``psi`` (``(B, 2 * C)``, scale first) that the generator passes in, so the same weights
    render any person.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.channels = channels
        self.eps = eps

    @property
    def num_adain_params(self) -> int:
        return 2 * self.channels

    def forward(self, x: torch.Tensor, params: torch.Tensor, relu: bool = False) -> torch.Tensor:
        # x (B, C, H, W); params (B, 2C); relu: ReLU(AdaIN(x))
        if params.shape != (x.shape[0], 2 * self.channels):
            raise ValueError(f"AdaIN({self.channels}) needs params of shape {(x.shape[0], 2 * self.channels)}, "
                             f"got {tuple(params.shape)}")
        scale, bias = params[:, :self.channels, None, None], params[:, self.channels:, None, None]
        return instance_norm(x, self.eps, scale, bias, relu=relu)


class SelfAttention(nn.Module):
    """SAGAN self-attention: ``x + gamma * o`` with ``gamma`` learned from 0.

    Query and key have ``C / 8`` channels (SAGAN, section 4); value has ``C / 2`` channels and a
    1x1 output convolution maps back to ``C``, as in the SAGAN / BigGAN reference code. No 1/sqrt(d)
    scaling (SAGAN's softmax is over raw dot products). ``gamma = 0`` at initialisation makes the
    block an identity, so the network first learns local structure and then leans on attention.
    """

    def __init__(self, channels: int, sn: bool = True):
        super().__init__()
        qk = max(1, channels // 8)
        vc = max(1, channels // 2)
        self.query = conv(channels, qk, 1, sn=sn, bias=False)
        self.key = conv(channels, qk, 1, sn=sn, bias=False)
        self.value = conv(channels, vc, 1, sn=sn, bias=False)
        self.out = conv(vc, channels, 1, sn=sn, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, HW, C/8)
        k = self.key(x).flatten(2).transpose(1, 2)    # (B, HW, C/8)
        v = self.value(x).flatten(2).transpose(1, 2)  # (B, HW, C/2)
        # The fused kernels (flash attention, on CPU and GPU) keep the (HW x HW) matrix out of memory
        # (64x64 -> 4096^2) but want one head size for q, k and v; zeros added to q and k change no
        # dot product, and let them run instead of the unfused fallback: 8-10x faster attention on
        # CPU at 32x32 (bench/profile_steps.py shows the fallback as _scaled_dot_product_attention_math).
        # The fused kernel also wants the head dimension contiguous (stride 1), which the transposes above are not.
        pad = v.shape[-1] - q.shape[-1]
        if pad > 0:
            q, k = F.pad(q, (0, pad)), F.pad(k, (0, pad))
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        o = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)[:, 0]
        o = o.transpose(1, 2).reshape(b, -1, h, w)    # (B, C/2, H, W)
        return x + self.gamma * self.out(o)


class ResBlockDown(nn.Module):
    """BigGAN discriminator block: ``[norm] ReLU conv3x3 [norm] ReLU conv3x3 avgpool2`` plus a
    ``conv1x1`` shortcut on the pooled input.

    Args:
        in_ch, out_ch: channels in and out.
        sn: spectral normalisation on the convolutions.
        norm: instance normalisation (with its own affine parameters) before each ReLU; the paper
            uses it in the generator's landmark encoder, not in the embedder or discriminator.
        preactivation: start with ``[norm] ReLU``. False for the first block, which sees the raw
            image in [-1, 1] (a leading ReLU would discard its negative half), as in BigGAN.
        downsample: halve the resolution; False gives the discriminator's extra block at 4x4.
    """

    def __init__(self, in_ch: int, out_ch: int, sn: bool = True, norm: bool = False,
                 preactivation: bool = True, downsample: bool = True):
        super().__init__()
        self.preactivation = preactivation
        self.downsample = downsample
        self.norm1 = InstanceNorm(in_ch, affine=True) if norm and preactivation else nn.Identity()
        self.conv1 = conv(in_ch, out_ch, 3, sn=sn)
        self.norm2 = InstanceNorm(out_ch, affine=True) if norm else nn.Identity()
        self.conv2 = conv(out_ch, out_ch, 3, sn=sn)
        # a learned shortcut only where the shape changes (BigGAN); identity otherwise
        self.shortcut = conv(in_ch, out_ch, 1, sn=sn) if in_ch != out_ch or downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (B, in_ch, H, W) -> (B, out_ch, H/2, W/2)
        h = norm_relu(self.norm1, x) if self.preactivation else x
        h = self.conv1(h)
        h = norm_relu(self.norm2, h)
        if self.downsample and self.conv2.stride == (2, 2):
            # the fast path's conv2, which pools as it convolves (pooled_conv): its sum with the
            # shortcut is one oneDNN call (conv_add)
            return conv_add(self.conv2, h, self.shortcut(avg_pool2(x)))
        h = self.conv2(h)
        if self.downsample:
            h = avg_pool2(h)
        if self.shortcut is None:
            return h + x
        # a 1x1 conv commutes with average pooling: pooling first is the same map, 4x cheaper
        return conv_add(self.shortcut, avg_pool2(x) if self.downsample else x, h)


class ResBlock(nn.Module):
    """BigGAN-style residual block at constant resolution with AdaIN:
    ``AdaIN ReLU conv3x3 AdaIN ReLU conv3x3`` plus identity (the generator's bottleneck)."""

    def __init__(self, channels: int, sn: bool = True):
        super().__init__()
        self.norm1 = AdaIN(channels)
        self.conv1 = conv(channels, channels, 3, sn=sn)
        self.norm2 = AdaIN(channels)
        self.conv2 = conv(channels, channels, 3, sn=sn)

    @property
    def num_adain_params(self) -> int:
        return self.norm1.num_adain_params + self.norm2.num_adain_params

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        p1, p2 = params.split([self.norm1.num_adain_params, self.norm2.num_adain_params], dim=1)
        h = self.conv1(norm_relu(self.norm1, x, p1))
        return conv_add(self.conv2, norm_relu(self.norm2, h, p2), x)


def _phase_taps(w: torch.Tensor, phase: int, dim: int) -> torch.Tensor:
    """The 3 taps of a 3x3 kernel along ``dim`` as the 2 taps that output ``phase`` (0: even rows /
    columns, 1: odd) of a nearest-upsampled input sees at the input's resolution: even outputs see
    the row above once (tap 0) and their own row twice (taps 1 + 2), odd ones their own row twice
    (taps 0 + 1) and the row below once (tap 2)."""
    t0, t1, t2 = w.unbind(dim)
    return torch.stack([t0, t1 + t2] if phase == 0 else [t0 + t1, t2], dim)


#: the output phases (row, column) in the order of :class:`UpsampleConv`'s output channel groups
_PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))


class UpsampleConv(nn.Module):
    """``conv(F.interpolate(x, scale_factor=2, mode="nearest"))`` for a same-padded 3x3 ``conv``,
    computed at the input's resolution (inference only: the fast path swaps it in with
    :func:`low_res_upsampling`).

    Each of the four output phases (even/odd row x even/odd column) of a 3x3 convolution over a
    nearest-upsampled input is a 2x2 convolution over the input itself, with taps summed from the
    3x3 kernel (:func:`_phase_taps`). One convolution with the four 2x2 kernels stacked as output
    channels (padding 1, so that every phase's window fits) computes them all, and the phases are
    interleaved into the output. The same map up to float rounding, with 16 taps per input pixel
    instead of 36 (2.25x fewer FLOPs) and no upsampled copy of the input.
    """

    def __init__(self, conv3x3: nn.Conv2d):
        super().__init__()
        if conv3x3.kernel_size != (3, 3) or conv3x3.padding != (1, 1) or conv3x3.stride != (1, 1) \
                or conv3x3.groups != 1 or conv3x3.dilation != (1, 1):
            raise ValueError("UpsampleConv needs a plain same-padded 3x3 convolution")
        w = conv3x3.weight.detach()
        self.out_channels = conv3x3.out_channels
        # the four phases' 2x2 kernels stacked as output channels: one plain convolution, which the
        # fast path's dtype cast and weight packing treat as any other
        self.conv = nn.Conv2d(conv3x3.in_channels, 4 * self.out_channels, 2, padding=1,
                              bias=conv3x3.bias is not None).to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat([_phase_taps(_phase_taps(w, a, 2), b, 3) for a, b in _PHASES]))
            if conv3x3.bias is not None:
                self.conv.bias.copy_(conv3x3.bias.detach().repeat(4))
        self.conv.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        o = self.out_channels
        y = self.conv(x)                                                          # (B, 4 O, H + 1, W + 1)
        fmt = torch.channels_last if y.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = torch.empty((b, o, 2 * h, 2 * w), dtype=y.dtype, device=y.device, memory_format=fmt)
        for k, (r, c) in enumerate(_PHASES):
            # phase (r, c) of output pixel (i, j) is the window starting at input (i - 1 + r, j - 1 + c)
            out[:, :, r::2, c::2] = y[:, k * o:(k + 1) * o, r:r + h, c:c + w]
        return out


def low_res_upsampling(module: nn.Module) -> nn.Module:
    """Swap every :class:`ResBlockUp`'s up-sampling convolution in ``module`` (in place) for an
    :class:`UpsampleConv` computed at the low resolution; for inference copies of a model (the fast
    path's :func:`~headpuppet.fewshot.animator.fold_spectral_norm`): a spectral-normalised
    convolution is left as it is. Returns ``module``."""
    for block in module.modules():
        if isinstance(block, ResBlockUp) and type(block.conv1) is nn.Conv2d \
                and not parametrize.is_parametrized(block.conv1, "weight"):
            block.conv1 = UpsampleConv(block.conv1)
    return module


def pooled_conv(conv3x3: nn.Conv2d) -> nn.Conv2d:
    """``avg_pool2(conv3x3(x))`` as one convolution, for inference copies of a model (the fast path
    swaps it in with :func:`strided_downsampling`): a 4x4 kernel of stride 2 and padding 1, the sum
    of the 3x3 kernel's four copies shifted over the 2x2 pooling window, each weighted 1/4. The same
    map up to float rounding (odd sizes included: both drop the last row and column), with 16 taps
    at a quarter of the output pixels instead of 9 at all of them (0.44x the FLOPs), and without the
    full-resolution output or the pooling pass over it."""
    if conv3x3.kernel_size != (3, 3) or conv3x3.padding != (1, 1) or conv3x3.stride != (1, 1) \
            or conv3x3.groups != 1 or conv3x3.dilation != (1, 1) or conv3x3.padding_mode != "zeros":
        raise ValueError("pooled_conv needs a plain same-padded 3x3 convolution")
    w = conv3x3.weight.detach()
    kernel = w.new_zeros(*w.shape[:2], 4, 4)
    for r in (0, 1):
        for c in (0, 1):
            kernel[:, :, r:r + 3, c:c + 3] += w / 4
    out = nn.Conv2d(conv3x3.in_channels, conv3x3.out_channels, 4, stride=2, padding=1,
                    bias=conv3x3.bias is not None).to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(kernel)
        if conv3x3.bias is not None:
            out.bias.copy_(conv3x3.bias)
    return out.requires_grad_(False)


def strided_downsampling(module: nn.Module) -> nn.Module:
    """Swap every down-sampling :class:`ResBlockDown`'s second convolution in ``module`` (in place)
    for its :func:`pooled_conv`, which the block then adds to its shortcut without pooling again;
    for inference copies of a model (the fast path's
    :func:`~headpuppet.fewshot.animator.fold_spectral_norm`): a spectral-normalised convolution is
    left as it is. Returns ``module``."""
    for block in module.modules():
        if isinstance(block, ResBlockDown) and block.downsample and type(block.conv2) is nn.Conv2d \
                and not parametrize.is_parametrized(block.conv2, "weight") and block.conv2.stride == (1, 1):
            block.conv2 = pooled_conv(block.conv2)
    return module


#: whether this torch has oneDNN's weight reorder and its convolution on a reordered weight (what
#: inductor's frozen CPU graphs call); whether they run here, per dtype: :func:`_packing_works`
_PREPACK = _FUSED_CONV_ADD and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")
_PACKING_WORKS: dict[torch.dtype, bool] = {}


class PackedConv2d(nn.Module):
    """A convolution for CPU inference whose weight oneDNN has reordered, once, into the blocked
    layout it computes with (:func:`prepack_convolutions` swaps it in on the render fast path).

    ``F.conv2d`` hands oneDNN the weight in PyTorch's layout, which it reorders at every call: a
    fixed cost per layer that a 3x3 convolution with 512 channels at 16x16 in bf16 spends 30-70% of
    its time on (the same reorder inductor's frozen graphs do once). The outputs are the same, bit
    for bit. Inference only: autograd cannot see through the packed weight (a call that needs a
    gradient takes the slow way, through a plain copy of the weight). The input is cast to the
    weight's dtype, as autocast would cast it.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, padding=(0, 0), stride=(1, 1),
                 dilation=(1, 1), groups: int = 1):
        super().__init__()
        self.out_channels, per_group = weight.shape[:2]
        self.in_channels = per_group * groups
        self.kernel_size = tuple(weight.shape[2:])
        self.padding, self.stride, self.dilation = tuple(padding), tuple(stride), tuple(dilation)
        self.groups = groups
        self.padding_mode = "zeros"
        self.dtype = weight.dtype
        self.packed = torch.ops.mkldnn._reorder_convolution_weight(
            weight.detach(), list(self.padding), list(self.stride), list(self.dilation), groups)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "PackedConv2d":
        return cls(conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups)

    def dense_weight(self) -> torch.Tensor:
        """The weight in PyTorch's layout (a copy)."""
        return self.packed.to_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        if torch.is_grad_enabled() and x.requires_grad:
            return F.conv2d(x, self.dense_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)
        return torch.ops.mkldnn._convolution_pointwise(x, self.packed, self.bias, list(self.padding),
                                                       list(self.stride), list(self.dilation), self.groups,
                                                       "none", [], "")

    def __deepcopy__(self, memo) -> "PackedConv2d":  # a oneDNN tensor has no storage to copy
        return PackedConv2d(self.dense_weight(), None if self.bias is None else self.bias.clone(), self.padding,
                            self.stride, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"padding={self.padding}, dtype={self.dtype}, prepacked")


def _packing_works(dtype: torch.dtype) -> bool:
    """Whether :class:`PackedConv2d` runs here in ``dtype`` and gives ``F.conv2d``'s numbers (a
    tiny convolution, once per dtype and process): a processor without bf16 support, or a torch
    built without oneDNN, keeps plain convolutions."""
    if not _PREPACK or dtype not in (torch.float32, torch.bfloat16):
        return False
    if dtype not in _PACKING_WORKS:
        try:
            g = torch.Generator().manual_seed(0)
            w = torch.randn(8, 8, 3, 3, generator=g).to(dtype)
            b = torch.randn(8, generator=g).to(dtype)
            x = torch.randn(1, 8, 5, 5, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                got = PackedConv2d(w, b, (1, 1))(x).float()
                ref = F.conv2d(x, w, b, padding=1).float()
            _PACKING_WORKS[dtype] = bool(torch.allclose(got, ref, atol=1e-2, rtol=1e-2))
        except RuntimeError:
            _PACKING_WORKS[dtype] = False
    return _PACKING_WORKS[dtype]


def _packable(conv: nn.Module) -> bool:
    return (type(conv) is nn.Conv2d and not parametrize.is_parametrized(conv, "weight")
            and conv.weight.device.type == "cpu" and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and _packing_works(conv.weight.dtype))


def prepack_convolutions(module: nn.Module) -> nn.Module:
    """Swap every plain CPU ``nn.Conv2d`` in ``module`` (in place, :class:`UpsampleConv`'s own
    included) for a :class:`PackedConv2d`; for inference copies of a model (the render fast path's eager fold, :meth:`~headpuppet.fewshot.animator.Animator._folded`),
    not for ones that :func:`torch.compile` traces (inductor packs its own). Spectral-normalised
    convolutions, and everything where this torch or processor cannot run oneDNN's packed
    convolution, stay as they are. Returns ``module``."""
    for name, sub in list(module.named_modules()):
        if _packable(sub):
            parent, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent) if parent else module, child, PackedConv2d.from_conv(sub))
    return module


class ResBlockUp(nn.Module):
    """BigGAN generator block with AdaIN in place of conditional batch norm:
    ``AdaIN ReLU up2 conv3x3 AdaIN ReLU conv3x3`` plus ``up2 conv1x1`` shortcut (nearest upsampling)."""

    def __init__(self, in_ch: int, out_ch: int, sn: bool = True):
        super().__init__()
        self.norm1 = AdaIN(in_ch)
        self.conv1 = conv(in_ch, out_ch, 3, sn=sn)
        self.norm2 = AdaIN(out_ch)
        self.conv2 = conv(out_ch, out_ch, 3, sn=sn)
        self.shortcut = conv(in_ch, out_ch, 1, sn=sn)

    @property
    def num_adain_params(self) -> int:
        return self.norm1.num_adain_params + self.norm2.num_adain_params

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        # x (B, in_ch, H, W) -> (B, out_ch, 2H, 2W)
        p1, p2 = params.split([self.norm1.num_adain_params, self.norm2.num_adain_params], dim=1)
        h = norm_relu(self.norm1, x, p1)
        if isinstance(self.conv1, UpsampleConv):  # the fast path's: upsampling and conv in one
            h = self.conv1(h)
        else:
            h = self.conv1(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        # 1x1 conv before upsampling: the same map as after it (both are per-pixel / replication), 4x cheaper
        s = F.interpolate(self.shortcut(x), scale_factor=2.0, mode="nearest")
        return conv_add(self.conv2, norm_relu(self.norm2, h, p2), s)


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def check_model_config(mcfg) -> None:
    """Raise :class:`~headpuppet.errors.ConfigError` for sizes the networks cannot be built with."""
    s = mcfg.image_size
    if not _is_pow2(s) or s < 8:
        raise ConfigError(f"model.image_size must be a power of two >= 8 (e.g. 128 or 256), got {s}")
    if not _is_pow2(mcfg.gen_bottleneck) or not 4 <= mcfg.gen_bottleneck < s:
        raise ConfigError(f"model.gen_bottleneck must be a power of two in [4, {s // 2}], got {mcfg.gen_bottleneck}")
    for key in ("ch", "max_ch", "emb_dim"):
        if getattr(mcfg, key) < 1:
            raise ConfigError(f"model.{key} must be a positive integer, got {getattr(mcfg, key)}")
    if mcfg.max_ch < mcfg.ch:
        raise ConfigError(f"model.max_ch ({mcfg.max_ch}) must be >= model.ch ({mcfg.ch})")
    if mcfg.gen_res_blocks < 0:
        raise ConfigError(f"model.gen_res_blocks must be >= 0, got {mcfg.gen_res_blocks}")
    down = [s >> i for i in range(1, s.bit_length()) if s >> i >= 4]
    for r in mcfg.attention_down:
        if r not in down:
            raise ConfigError(f"model.attention_down: {r} is not a resolution of the down-sampling paths; "
                              f"use some of {down}")
    up = [mcfg.gen_bottleneck << i for i in range(1, 16) if mcfg.gen_bottleneck << i <= s]
    for r in mcfg.attention_up:
        if r not in up:
            raise ConfigError(f"model.attention_up: {r} is not a resolution of the generator's up-sampling path; "
                              f"use some of {up}")
    if mcfg.disc_scales < 1 or s >> (mcfg.disc_scales - 1) < 8:
        raise ConfigError(f"model.disc_scales must be >= 1 and leave the smallest scale >= 8 px, got {mcfg.disc_scales}")
    if getattr(mcfg, "disc_pool", "sum-relu") not in ("sum-relu", "relu-sum"):
        raise ConfigError(f"model.disc_pool must be 'sum-relu' or 'relu-sum', got {mcfg.disc_pool!r}")
    if getattr(mcfg, "generator", "paper") not in ("paper", "warp"):
        raise ConfigError(f"model.generator must be 'paper' or 'warp', got {mcfg.generator!r}")


def down_channels(resolution: int, image_size: int, ch: int, max_ch: int) -> int:
    """Channels of a down-sampling path at ``resolution``: ``ch`` after the first block (at
    image_size / 2), doubled per halving, capped at ``max_ch`` (paper: 64 -> 512)."""
    halvings = (image_size // resolution).bit_length() - 1
    return min(ch << max(halvings - 1, 0), max_ch)


class DownPath(nn.Module):
    """A stack of :class:`ResBlockDown` from ``image_size`` down to ``stop_res``, with self-attention
    after the block that reaches each resolution in ``attention``.

    ``forward`` returns the activation after every block (after its attention, where there is one):
    the discriminator's feature-matching loss compares these.
    """

    def __init__(self, in_ch: int, image_size: int, stop_res: int, ch: int, max_ch: int,
                 attention: list[int], sn: bool = True, norm: bool = False, last_ch: int | None = None):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleDict()
        res, c_in = image_size, in_ch
        while res > stop_res:
            res //= 2
            c_out = down_channels(res, image_size, ch, max_ch)
            if res == stop_res and last_ch is not None:
                c_out = last_ch
            self.blocks.append(ResBlockDown(c_in, c_out, sn=sn, norm=norm, preactivation=len(self.blocks) > 0))
            if res in attention:
                self.attn[str(len(self.blocks) - 1)] = SelfAttention(c_out, sn=sn)
            c_in = c_out
        self.out_channels = c_in

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if str(i) in self.attn:
                x = self.attn[str(i)](x)
            feats.append(x)
        return feats

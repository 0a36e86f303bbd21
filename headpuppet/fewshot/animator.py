"""The Animator: a trained model ready for few-shot inference, and its fast inference path.

Zakharov et al. 2019, section 3.1/3.3: the embedder maps K shots (frame + landmark image) of a new
person to ``e_new`` (mean over the K shots); the generator's AdaIN parameters ``psi = P e_new`` are
computed ONCE and cached in a :class:`~headpuppet.fewshot.person.Person`, after which each output
frame costs one pass of G on the driver's landmark image (section 4, "puppeteering").

The fast path (:func:`fold_spectral_norm`, :func:`resolve_precision`): G renders with its spectral
norms folded into plain weights, in the channels-last memory format, in bf16 where the hardware
computes it natively; the same function as the plain fp32 G within the tolerance the tests state,
and each part can be switched off. ``render(compile=True)`` adds :func:`torch.compile` (inductor,
weights frozen into the graph): a one-off compile (tens of seconds on a CPU) for fused kernels
afterwards; it pays on long drivers and large models, and falls back to the eager fast path where
it cannot compile (no C++ compiler, an unsupported op).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn.utils import parametrize

from ..config import Config
from ..devices import PRECISIONS, native_bf16
from ..errors import CheckpointError, MediaError, NoFaceError
from ..media.crop import crop_frame, face_crop_box, iris_to_crop, to_crop
from ..media.imaging import to_tensor, to_uint8
from ..media.landmarks import rasterise
from ..models.blocks import low_res_upsampling, prepack_convolutions, strided_downsampling
from ..models.warp_generator import needs_source
from ..plugins import DEFAULT_DETECTOR, make_plugin_manager, registry
from ..progress import NULL, Reporter
from ..protocols import largest_face
from ..training.checkpoint import load_checkpoint
from .finetune import fine_tune_person
from .person import Person, read_person_dir, write_person_dir

log = logging.getLogger(__name__)


def default_checkpoint() -> Path:
    """``weights/demo`` of the repository (or source tree) this package was installed from."""
    return Path(__file__).resolve().parents[2] / "weights" / "demo"


def resolve_checkpoint(checkpoint: str | Path | None) -> Path:
    """``checkpoint`` as a path that exists; None means :func:`default_checkpoint`."""
    ckpt = Path(checkpoint) if checkpoint else default_checkpoint()
    if not ckpt.exists():
        raise CheckpointError(f"no checkpoint at {ckpt}; pass --checkpoint with a run or checkpoint folder"
                              + ("" if checkpoint else " (the demo weights are not installed)"))
    return ckpt


class Animator:
    """A trained model ready for few-shot inference.

    Args:
        cfg: the resolved config the networks were built with (size, iris use).
        generator: G; embedder E (needed for new sources) and discriminator D (needed for
            fine-tuning) are optional.
        device: where the networks run (``"cpu"``, ``"cuda"``).
        pm: plugin manager (for the landmark detector and the fine-tuning losses).
        detector_name: the landmark detector the training data was made with.
        source: where the weights came from (for messages and person folders).
        precision: ``"auto"`` (bf16 where the hardware computes it natively, see
            :func:`resolve_precision`), ``"fp32"`` or ``"bf16"``: how :meth:`render` runs G.
    """

    def __init__(self, cfg: Config, generator: torch.nn.Module, embedder: torch.nn.Module | None = None,
                 discriminator: torch.nn.Module | None = None, *, device: str | torch.device = "cpu", pm=None,
                 detector_name: str = DEFAULT_DETECTOR, source: str = "", num_videos: int | None = None,
                 precision: str = "auto"):
        self.cfg = cfg
        self.device = torch.device(device)
        self.generator = generator.to(self.device).eval()
        self.embedder = embedder.to(self.device).eval() if embedder is not None else None
        self.discriminator = discriminator.to(self.device).eval() if discriminator is not None else None
        self.pm = pm
        self.detector_name = detector_name
        self.source = source
        self.num_videos = num_videos
        self.precision = resolve_precision(precision, self.device)
        self._fold_cache: dict[tuple, tuple] = {}
        self._compile_cache: dict[tuple, _CompiledG] = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", pm=None,
                        use_ema: bool = True, precision: str = "auto") -> "Animator":
        """Load a run folder (latest checkpoint) or a checkpoint folder written by ``meta-train``.

        ``use_ema`` takes the moving average of G's weights when the checkpoint has one.
        """
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"no checkpoint at {path}; pass --checkpoint with a run or checkpoint "
                                  f"folder written by `headpuppet meta-train`")
        pm = _pm(pm)
        ckpt = load_checkpoint(path, device="cpu", pm=pm)
        meta = ckpt.meta or {}
        generator = ckpt.inference_generator if use_ema else ckpt.generator
        return cls(ckpt.cfg, generator, ckpt.embedder, ckpt.discriminator, device=device, pm=pm,
                   detector_name=_detector_from_meta(meta), source=str(path),
                   num_videos=int(meta.get("num_videos", 1)), precision=precision)

    @classmethod
    def from_person_dir(cls, path: str | Path, device: str | torch.device = "cpu",
                        pm=None, precision: str = "auto") -> tuple["Animator", Person]:
        """Load a fine-tuned person folder: an animator around its G/D and the :class:`Person`."""
        pm = _pm(pm)
        folder = read_person_dir(path, pm, device)
        animator = cls(folder.cfg, folder.generator, None, folder.discriminator, device=device, pm=pm,
                       detector_name=folder.meta.get("detector", DEFAULT_DETECTOR), source=str(path),
                       num_videos=int(folder.meta.get("num_videos", 1)), precision=precision)
        return animator, folder.person

    # ------------------------------------------------------------------ helpers
    @property
    def size(self) -> int:
        return int(self.cfg.model.image_size)

    @property
    def uses_iris(self) -> bool:
        return bool(self.cfg.model.iris)

    @property
    def default_finetune_steps(self) -> int:
        """The fine-tuning ``animate`` does on new shots by default: the model's ``finetune.steps``,
        or none for a model without the discriminator that fine-tuning needs."""
        return int(self.cfg.finetune.steps) if self.discriminator is not None else 0

    def make_detector(self, name: str | None = None):
        """The landmark detector plugin ``name`` (default: the one the model was trained with)."""
        return registry(_pm(self.pm), "landmarks").create(name or self.detector_name)

    def landmark_images(self, points: np.ndarray, iris: np.ndarray | None = None) -> torch.Tensor:
        """``(B, 68, 2)`` crop px (+ ``(B, 2, 3)`` iris) -> ``(B, 3, S, S)`` float in [-1, 1] on the device."""
        use_iris = self.uses_iris and iris is not None
        imgs = np.stack([rasterise(p, self.size, iris=iris[i] if use_iris else None)
                         for i, p in enumerate(points)])  # (B, S, S, 3)
        return to_tensor(imgs).to(self.device)

    # ------------------------------------------------------------------ sources
    def prepare_source(self, images: list[np.ndarray], detector=None, labels: list[str] | None = None,
                       reporter: Reporter | None = None) -> Person:
        """Detect, crop and embed the K shots of a new person (E runs once, ``psi = P e`` cached).

        Each image's largest face is used; where several faces were found this is recorded in
        ``Person.faces_found`` (and reported as a warning). A shot without a face raises
        :class:`NoFaceError`.
        """
        if self.embedder is None:
            raise CheckpointError(f"{self.source} has no embedder, so it cannot take new source photos; "
                                  f"use a checkpoint from `headpuppet meta-train`")
        reporter = reporter or NULL
        detector = detector or self.make_detector()
        labels = list(labels) if labels is not None else [f"image {i + 1}" for i in range(len(images))]
        if not images:
            raise MediaError("no source images given")
        crops, pts, irises, found, boxes = [], [], [], [], []
        use_iris = self.uses_iris and getattr(detector, "has_iris", False)
        for img, label in zip(images, labels):
            detector.reset()  # shots are independent pictures: no tracking across them
            faces = detector.detect(img)
            if not faces:
                raise NoFaceError(f"no face found in the source {label}; use a photo where the face is clearly visible")
            face = largest_face(faces)
            if len(faces) > 1:
                reporter.warn(f"{len(faces)} faces in the source {label}; using the largest")
            box = face_crop_box(face.points, img.shape[:2])
            crops.append(crop_frame(img, box, self.size))
            pts.append(to_crop(face.points, box, self.size))
            if use_iris:
                irises.append(iris_to_crop(face.iris, box, self.size) if face.iris is not None else None)
            found.append(len(faces))
            boxes.append(box)
        iris = np.stack(irises).astype(np.float32) if use_iris and all(i is not None for i in irises) else None
        frames = np.stack(crops)   # (K, S, S, 3)
        points = np.stack(pts)     # (K, 68, 2)
        e = self.embed(frames, points, iris)
        with torch.no_grad():
            psi = self.generator.project(e)  # (1, P), cached: G never sees E again
        w = self._w0_plus(e)
        return Person(frames, points, iris, e, psi, w, image=images[0], box=boxes[0], labels=labels,
                      faces_found=found)

    def embed(self, frames: np.ndarray, points: np.ndarray, iris: np.ndarray | None = None) -> torch.Tensor:
        """``(K, S, S, 3)`` crops + ``(K, 68, 2)`` landmarks -> ``e`` ``(1, N)`` (mean over K)."""
        x = to_tensor(frames).to(self.device)[None]               # (1, K, 3, S, S)
        y = self.landmark_images(points, iris)[None]              # (1, K, 3, S, S)
        with torch.no_grad():
            e, _ = self.embedder(x, y)                            # (1, N)
        return e.float()

    def _w0_plus(self, e: torch.Tensor) -> torch.Tensor | None:
        w0 = getattr(self.discriminator, "w0", None)
        return (w0.detach().to(e) + e).reshape(1, -1) if w0 is not None else None

    # ------------------------------------------------------------------ rendering
    def render(self, person: Person, points: np.ndarray, iris: np.ndarray | None = None, *,
               batch_size: int = 16, amp: str | None = None, channels_last: bool | None = None,
               fast: bool = True, compile: bool = False) -> np.ndarray:
        """G on the landmark images of ``points`` ``(B, 68, 2)`` (crop px) -> ``(B, S, S, 3) uint8``.

        Only G runs (inference mode, in chunks of ``batch_size``); ``psi`` comes from the person.
        ``amp``: ``"bf16"`` autocasts, ``"none"``/``"fp32"`` does not; None takes the animator's
        ``precision``. ``channels_last`` uses that memory format (None: with ``fast``, the fast
        path's default; instance norm keeps it, :func:`headpuppet.models.blocks.instance_norm`).
        ``fast`` renders with a copy of G
        whose spectral norms are folded into plain weights (:func:`fold_spectral_norm`: the same
        function in eval mode, without recomputing ``W / sigma`` at every call).
        ``compile`` (with ``fast``) runs such a copy through :func:`torch.compile` (:meth:`_compiled`);
        a shorter last chunk is padded to ``batch_size`` so that one compiled shape serves them all.
        """
        gen = person.generator if person.generator is not None else self.generator
        gen.eval()
        bf16 = (self.precision if amp is None else amp) == "bf16"
        if channels_last is None:
            channels_last = fast
        compiled = None
        if fast:
            compiled = self._compiled(gen, bf16, channels_last) if compile else None
            # the compiled G's own fold serves any eager call too (no second copy of G), unless it
            # cannot compile at all
            gen = compiled.folded if compiled is not None and compiled.fn is not None \
                else self._folded(gen, bf16, channels_last)
        elif channels_last:
            gen.to(memory_format=torch.channels_last)
        # a copy with the usual strides: a view such as points[None] has stride 0 on its size-1 axis,
        # which a compiled G's guards see as another input and compile again for
        points = np.array(points, np.float32)
        out = []
        for i in range(0, len(points), batch_size):
            p = points[i:i + batch_size]
            ir = None if iris is None else iris[i:i + batch_size]
            n = len(p)
            if compiled is not None and compiled.fn is not None and n < batch_size:
                p = _pad_rows(p, batch_size)
                ir = None if ir is None else _pad_rows(ir, batch_size)
            y = self.landmark_images(p, ir)                                   # (b, 3, S, S)
            if channels_last:
                y = y.contiguous(memory_format=torch.channels_last)
            psi = person.psi.to(self.device).expand(len(p), -1)  # (b, P)
            src = self.source_kwargs(gen, person, p)
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                fake = compiled.run(y, psi, src) if compiled is not None else None
                if fake is None:
                    fake = gen(y, psi=psi, **src)                    # (b, 3, S, S) in [-1, 1]
            out.append(to_uint8(fake[:n].float()))
        return np.concatenate(out, 0) if out else np.zeros((0, self.size, self.size, 3), np.uint8)

    def _compiled(self, gen: torch.nn.Module, bf16: bool, channels_last: bool) -> "_CompiledG":
        """:func:`compile_frozen` of ``gen`` folded (inductor, with its weights frozen into the graph as
        constants, static shapes), made once per folded copy (a fine-tuned G is a new copy) and
        compiled on its first call (:meth:`_CompiledG.run`). Its fold keeps the up-sampling
        convolutions at the high resolution: inductor's kernels for them are faster than its
        kernels for :class:`~headpuppet.models.blocks.UpsampleConv`'s interleaving (paper-256,
        compiled with frozen weights: 1.07x slower with it, ``bench/fast_path.py --compiled``).
        Where inductor finds no C++ compiler (checked on the first call per precision and format,
        and said once), no such fold is made: its ``folded`` and ``fn`` are None and :meth:`render`
        uses the eager fold."""
        key = (bf16, channels_last)
        hit = self._compile_cache.get(key)
        if hit is not None and hit.folded is None:
            return hit
        if hit is None:
            missing = _no_cpp_compiler() if self.device.type == "cpu" else None
            if missing:  # say so now, not after the half minute of tracing that ends in the same error
                log.warning("torch.compile could not compile G (%s); rendering without it", missing)
                self._compile_cache[key] = hit = _CompiledG(None, None)
                return hit
        folded = self._folded(gen, bf16, channels_last, for_compile=True)
        if hit is None or hit.folded is not folded:
            hit = _CompiledG(folded, compile_frozen(folded))
            self._compile_cache[key] = hit
        return hit

    def _folded(self, gen: torch.nn.Module, bf16: bool = False, channels_last: bool = False,
                for_compile: bool = False) -> torch.nn.Module:
        """``gen`` with spectral norm folded (and, for ``bf16``, its convolution and linear weights
        stored in bf16, which autocast would otherwise cast anew at every call: 13% of the paper-256
        G's time), in the channels-last memory format when asked, cached per module, precision and
        format and rebuilt when its weights change (fine-tuning updates them in place, which bumps
        the tensors' version counters). The eager fold runs its up-sampling convolutions at the low
        resolution (:func:`fold_spectral_norm`) and, in channels-last on a CPU, gets its weights
        prepacked for oneDNN (:func:`~headpuppet.models.blocks.prepack_convolutions`); the fold
        ``for_compile`` does neither (inductor's kernels for the former are slower, and it packs its
        own weights)."""
        key = (id(gen), bf16, channels_last, for_compile)
        version = sum(int(t._version) for t in gen.state_dict().values())
        hit = self._fold_cache.get(key)
        if hit is None or hit[0] is not gen or hit[1] != version:
            folded = fold_spectral_norm(gen, torch.bfloat16 if bf16 else None, upsample_at_low_res=not for_compile)
            if channels_last:
                folded.to(memory_format=torch.channels_last)
                if not for_compile:
                    prepack_convolutions(folded)
            hit = (gen, version, folded)
            self._fold_cache[key] = hit
        return hit[2]

    def source_kwargs(self, gen: torch.nn.Module, person: Person, points: np.ndarray) -> dict:
        """What ``gen`` needs besides ``y`` to render ``points`` ``(B, 68, 2)`` of ``person``: the
        shots and their landmarks for the warp-guided generator, nothing for the paper's."""
        if not needs_source(gen):
            return {}
        b = len(points)
        shots = to_tensor(np.asarray(person.frames)).to(self.device)                       # (K, 3, S, S)
        shot_pts = torch.from_numpy(np.asarray(person.points, np.float32)).to(self.device)  # (K, 68, 2)
        return {"shots": shots[None].expand(b, -1, -1, -1, -1), "shot_points": shot_pts[None].expand(b, -1, -1, -1),
                "target_points": torch.from_numpy(np.asarray(points, np.float32)).to(self.device)}

    def fine_tune(self, person: Person, steps: int | None = None, reporter: Reporter | None = None,
                  **kwargs) -> Person:
        """Few-shot fine-tuning of G and D on the person's K shots (section 3.4); see
        :func:`headpuppet.fewshot.finetune.fine_tune_person`."""
        return fine_tune_person(self, person, steps=steps, reporter=reporter, **kwargs)

    # ------------------------------------------------------------------ person folders
    def save_person(self, person: Person, out_dir: str | Path, extra: dict | None = None) -> Path:
        """Write ``person`` (with its fine-tuned G/D, or the animator's) as a person folder
        (:func:`headpuppet.fewshot.person.write_person_dir`)."""
        return write_person_dir(person, out_dir, cfg=self.cfg, generator=self.generator,
                                discriminator=self.discriminator, detector=self.detector_name,
                                base_checkpoint=self.source, extra=extra)


# ---------------------------------------------------------------------- the fast path
def _pad_rows(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` with its last row repeated up to ``n`` rows."""
    return np.concatenate([a, np.repeat(a[-1:], n - len(a), axis=0)]) if len(a) < n else a


def _no_cpp_compiler() -> str | None:
    """Why inductor would find no working C++ compiler on this machine (its own check, which also
    reads ``CXX``), or None when it finds one or this torch has no such check."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:
        return None
    try:
        get_cpp_compiler()
    except Exception as exc:  # noqa: BLE001 - inductor's InvalidCxxCompiler, or whatever the check raises
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return f"{type(exc).__name__}: {first[:200]}"
    return None


def compile_frozen(module: torch.nn.Module) -> Callable:
    """:func:`torch.compile` of an inference copy of a model (static shapes), called with inductor's
    ``freezing`` on, so that its weights become constants of the graph: inductor folds them and packs
    each convolution's weight for oneDNN once, and fuses the residual adds into the convolutions.

    TorchDynamo decides whether parameters are such constants while it traces, from
    ``torch._inductor.config.freezing`` itself; ``torch.compile(..., options={"freezing": True})``
    reaches inductor only after the trace, so with it alone the weights stayed graph inputs and every
    convolution reordered its weight at every call. Every call runs under the setting (a recompile
    freezes too), and the setting is as it was outside the calls."""
    import torch._inductor.config as inductor_config

    fn = torch.compile(module, dynamic=False)

    def call(*args, **kwargs):
        with inductor_config.patch(freezing=True):
            return fn(*args, **kwargs)

    return call


@dataclass
class _CompiledG:
    """A folded G and its :func:`torch.compile` (``fn``; None once compiling has failed; both None where
    there is no C++ compiler to compile with); ``ok`` once a call has succeeded, i.e. once it has compiled."""

    folded: torch.nn.Module | None
    fn: Callable | None
    ok: bool = False

    def run(self, y: torch.Tensor, psi: torch.Tensor, src: dict) -> torch.Tensor | None:
        """The compiled G on one chunk; None where there is none. Its first call compiles; if that
        fails, the reason is logged on one line and G runs eagerly from then on (errors after a
        first success are real errors and propagate)."""
        if self.fn is None:
            return None
        if self.ok:
            return self.fn(y, psi=psi, **src)
        try:
            out = self.fn(y, psi=psi, **src)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: render eagerly instead
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("torch.compile could not compile G (%s: %s); rendering without it",
                        type(exc).__name__, first[:200])
            self.fn = None
            return None
        self.ok = True
        return out


def resolve_precision(precision: str | None, device: torch.device | str) -> str:
    """``"auto"`` -> ``"bf16"`` where :func:`native_bf16`, else ``"fp32"``; ``"fp32"``/``"bf16"`` as given."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def fold_spectral_norm(module: torch.nn.Module, weight_dtype: torch.dtype | None = None,
                       upsample_at_low_res: bool = True, strided_down: bool = True) -> torch.nn.Module:
    """A frozen eval-mode copy of ``module`` whose spectral-norm parametrisations are replaced by the
    weights they give in eval mode (``W / sigma`` with the stored power-iteration vectors): the same
    function, one matrix norm fewer per layer and call. With ``upsample_at_low_res``, the up-sampling
    blocks' first convolution then runs at the low resolution
    (:func:`~headpuppet.models.blocks.low_res_upsampling`: the same map, 2.25x fewer FLOPs in those
    layers; 4-8% less time for the whole G on this CPU, eagerly, with the fused adds: bench/fast_path.py).
    With ``strided_down``, the down-sampling blocks' second convolution and the average pooling after
    it become one strided 4x4 convolution (:func:`~headpuppet.models.blocks.pooled_conv`: the same
    map, 0.44x the FLOPs in those layers). ``weight_dtype`` (bf16, for autocast) stores
    every convolution and linear layer's parameters in that dtype: what autocast computes with anyway."""
    folded = copy.deepcopy(module).eval()
    # Each parametrised layer is swapped for a new plain one. (parametrize.remove_parametrizations
    # on the copy would delete the property from the parametrised class, which the copy shares with
    # the original module, and break the original.)
    for name, sub in list(folded.named_modules()):
        if not parametrize.is_parametrized(sub, "weight"):
            continue
        if isinstance(sub, torch.nn.Conv2d):
            plain = torch.nn.Conv2d(sub.in_channels, sub.out_channels, sub.kernel_size, sub.stride, sub.padding,
                                    sub.dilation, sub.groups, sub.bias is not None, sub.padding_mode)
        elif isinstance(sub, torch.nn.Linear):
            plain = torch.nn.Linear(sub.in_features, sub.out_features, sub.bias is not None)
        else:
            continue  # a layer type this fold does not know keeps its parametrisation
        with torch.no_grad():
            plain.weight.copy_(sub.weight)            # W / sigma, eval mode: no power iteration
            if sub.bias is not None:
                plain.bias.copy_(sub.bias)
        plain.to(device=sub.weight.device, dtype=sub.weight.dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(folded.get_submodule(parent_name) if parent_name else folded, child, plain)
    if upsample_at_low_res:
        low_res_upsampling(folded)  # the up-sampling blocks' first conv at the low resolution: the same map
    if strided_down:
        strided_downsampling(folded)  # the down-sampling blocks' second conv pools as it goes: the same map
    if weight_dtype is not None:
        for sub in folded.modules():
            if isinstance(sub, (torch.nn.Conv2d, torch.nn.Linear)):
                sub.to(weight_dtype)
    return folded.requires_grad_(False)


# ---------------------------------------------------------------------- small helpers
def _pm(pm):
    if pm is None:
        pm = make_plugin_manager()
    return pm


def _detector_from_meta(meta: dict) -> str:
    """The landmark detector the training data was made with, as recorded in the checkpoint
    (``plugins.detector``, written by :func:`headpuppet.training.checkpoint.make_meta`)."""
    plugins = meta.get("plugins")
    v = plugins.get("detector") if isinstance(plugins, dict) else None
    return v if isinstance(v, str) and v else DEFAULT_DETECTOR

"""Few-shot inference: embed the source once, then run only the generator per driver frame.

Zakharov et al. 2019, section 3.1/3.3: the embedder maps K shots (frame + landmark image) of a new
person to ``e_new`` (mean over the K shots); the generator's AdaIN parameters ``psi = P e_new`` are
computed ONCE and cached in a :class:`Person`, after which each output frame costs one pass of G on
the driver's landmark image (section 4, "puppeteering"). Section 3.4 (few-shot fine-tuning, in
:mod:`headpuppet.finetune`) produces a :class:`Person` with its own G/D weights, ``psi'`` and ``w'``,
saved as a *person folder* that ``animate`` takes as SOURCE.

:func:`animate` is the whole ``headpuppet animate`` pipeline (two passes over the driver: landmarks,
then render + encode), shared by the CLI and bench/animate.py.

Person folder (``headpuppet fine-tune`` output)::

    meta.json                 {"format": "headpuppet-person", "version": 1, "config": {...}, ...} (written last)
    generator.safetensors     fine-tuned G
    discriminator.safetensors fine-tuned D
    person.safetensors        psi (1, P), e (1, N), w (1, N), points (K, 68, 2)[, iris (K, 2, 3)]
    frames/000.png ...        the K source crops (S x S)
    image.png                 the full first source image (for --paste-back)
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config, from_dict, to_dict
from .errors import CheckpointError, HeadpuppetError, MediaError, NoFaceError
from .media.imaging import read_image, to_tensor, to_uint8, write_image
from .progress import NULL, Reporter
from .sources import PERSON_FORMAT, Driver

PERSON_VERSION = 1
DEFAULT_DETECTOR = "mediapipe"


def default_checkpoint() -> Path:
    """``weights/demo`` of the repository (or source tree) this package was installed from."""
    return Path(__file__).resolve().parent.parent / "weights" / "demo"


@dataclass
class Person:
    """A source person, ready to render: crops, landmarks and the cached AdaIN parameters.

    Attributes:
        frames: ``(K, S, S, 3) uint8`` the K source crops.
        points: ``(K, 68, 2) float32`` their landmarks in crop pixels.
        iris: ``(K, 2, 3) float32`` or None.
        e: ``(1, N)`` embedding (mean over K).
        psi: ``(1, P)`` AdaIN parameters ``P e`` (or the fine-tuned ``psi'``).
        w: ``(1, N)`` discriminator projection vector ``w0 + e`` (or the fine-tuned ``w'``); None
            when no discriminator was loaded.
        image: the full first source image ``(H, W, 3)`` (for paste-back), or None.
        box: the crop box of the first shot in ``image`` (a :class:`headpuppet.media.crop.CropBox`).
        labels: where each shot came from.
        faces_found: faces detected in each shot (the largest was used).
        generator / discriminator: fine-tuned networks; None means the animator's own.
        finetune_steps: fine-tuning steps applied.
    """

    frames: np.ndarray
    points: np.ndarray
    iris: np.ndarray | None
    e: torch.Tensor
    psi: torch.Tensor
    w: torch.Tensor | None = None
    image: np.ndarray | None = None
    box: Any = None
    labels: list[str] = field(default_factory=list)
    faces_found: list[int] = field(default_factory=list)
    generator: torch.nn.Module | None = None
    discriminator: torch.nn.Module | None = None
    finetune_steps: int = 0

    @property
    def num_shots(self) -> int:
        return len(self.frames)

    def several_faces(self) -> list[tuple[str, int]]:
        """``(label, faces)`` for every shot where more than one face was found."""
        return [(lab, n) for lab, n in zip(self.labels, self.faces_found) if n > 1]


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
        self._fold_cache: dict[int, tuple] = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", pm=None,
                        use_ema: bool = True, precision: str = "auto") -> "Animator":
        """Load a run folder (latest checkpoint) or a checkpoint folder written by ``meta-train``.

        ``use_ema`` takes the moving average of G's weights when the checkpoint has one.
        """
        from .training.checkpoint import load_checkpoint

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
        from safetensors.torch import load_file

        from .media.crop import CropBox
        from .models import build_networks

        path = Path(path)
        meta = _read_person_meta(path)
        try:
            cfg = from_dict(meta["config"])
        except HeadpuppetError as exc:
            raise CheckpointError(f"{path}: the person folder's config does not fit ({exc})") from None
        pm = _pm(pm)
        nets = build_networks(cfg, int(meta.get("num_videos", 1)), pm)
        try:
            nets.generator.load_state_dict(load_file(str(path / "generator.safetensors")))
            if (path / "discriminator.safetensors").exists():
                nets.discriminator.load_state_dict(load_file(str(path / "discriminator.safetensors")))
            tensors = load_file(str(path / "person.safetensors"))
            missing = [k for k in ("points", "e", "psi") if k not in tensors]
            if missing:
                raise ValueError(f"person.safetensors has no {missing[0]}")
        except Exception as exc:  # truncated or foreign safetensors raise their own error types
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise CheckpointError(f"{path}: the person folder is broken ({why}); "
                                  f"run `headpuppet fine-tune` again") from None
        animator = cls(cfg, nets.generator, None, nets.discriminator, device=device, pm=pm,
                       detector_name=meta.get("detector", DEFAULT_DETECTOR), source=str(path),
                       num_videos=int(meta.get("num_videos", 1)), precision=precision)
        frame_files = sorted((path / "frames").glob("*.png"))
        frames = np.stack([read_image(f) for f in frame_files]) if frame_files else \
            np.zeros((len(tensors["points"]), cfg.model.image_size, cfg.model.image_size, 3), np.uint8)
        dev = animator.device
        person = Person(
            frames=frames, points=tensors["points"].numpy(),
            iris=tensors["iris"].numpy() if "iris" in tensors else None,
            e=tensors["e"].to(dev), psi=tensors["psi"].to(dev),
            w=tensors["w"].to(dev) if "w" in tensors else None,
            image=read_image(path / "image.png") if (path / "image.png").exists() else None,
            box=CropBox.from_list(meta["box"]) if meta.get("box") else None,
            labels=list(meta.get("labels", [])), faces_found=list(meta.get("faces_found", [])),
            generator=None, discriminator=None, finetune_steps=int(meta.get("finetune_steps", 0)),
        )
        return animator, person

    # ------------------------------------------------------------------ helpers
    @property
    def size(self) -> int:
        return int(self.cfg.model.image_size)

    @property
    def uses_iris(self) -> bool:
        return bool(self.cfg.model.iris)

    def make_detector(self, name: str | None = None):
        """The landmark detector plugin ``name`` (default: the one the model was trained with)."""
        from .plugins import registry

        return registry(_pm(self.pm), "landmarks").create(name or self.detector_name)

    def landmark_images(self, points: np.ndarray, iris: np.ndarray | None = None) -> torch.Tensor:
        """``(B, 68, 2)`` crop px (+ ``(B, 2, 3)`` iris) -> ``(B, 3, S, S)`` float in [-1, 1] on the device."""
        from .media.landmarks import rasterise

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
        from .media.crop import crop_frame, face_crop_box, iris_to_crop, to_crop

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
            face = max(faces, key=lambda f: f.area)
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
               batch_size: int = 16, amp: str | None = None, channels_last: bool = False,
               fast: bool = True) -> np.ndarray:
        """G on the landmark images of ``points`` ``(B, 68, 2)`` (crop px) -> ``(B, S, S, 3) uint8``.

        Only G runs (inference mode, in chunks of ``batch_size``); ``psi`` comes from the person.
        ``amp``: ``"bf16"`` autocasts, ``"none"``/``"fp32"`` does not; None takes the animator's
        ``precision``. ``channels_last`` uses that memory format. ``fast`` renders with a copy of G
        whose spectral norms are folded into plain weights (:func:`fold_spectral_norm`: the same
        function in eval mode, without recomputing ``W / sigma`` at every call).
        """
        gen = person.generator if person.generator is not None else self.generator
        gen.eval()
        if fast:
            gen = self._folded(gen)
        if channels_last:
            gen.to(memory_format=torch.channels_last)
        bf16 = (self.precision if amp is None else amp) == "bf16"
        points = np.asarray(points, np.float32)
        out = []
        for i in range(0, len(points), batch_size):
            p = points[i:i + batch_size]
            y = self.landmark_images(p, None if iris is None else iris[i:i + batch_size])  # (b, 3, S, S)
            if channels_last:
                y = y.contiguous(memory_format=torch.channels_last)
            psi = person.psi.to(self.device).expand(len(p), -1)  # (b, P)
            src = self.source_kwargs(gen, person, p)
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                fake = gen(y, psi=psi, **src)                        # (b, 3, S, S) in [-1, 1]
            out.append(to_uint8(fake.float()))
        return np.concatenate(out, 0) if out else np.zeros((0, self.size, self.size, 3), np.uint8)

    def _folded(self, gen: torch.nn.Module) -> torch.nn.Module:
        """``gen`` with spectral norm folded, cached per module and rebuilt when its weights change
        (fine-tuning updates them in place, which bumps the tensors' version counters)."""
        key = id(gen)
        version = sum(int(t._version) for t in gen.state_dict().values())
        hit = self._fold_cache.get(key)
        if hit is None or hit[0] is not gen or hit[1] != version:
            hit = (gen, version, fold_spectral_norm(gen))
            self._fold_cache[key] = hit
        return hit[2]

    def source_kwargs(self, gen: torch.nn.Module, person: Person, points: np.ndarray) -> dict:
        """What ``gen`` needs besides ``y`` to render ``points`` ``(B, 68, 2)`` of ``person``: the
        shots and their landmarks for the warp-guided generator, nothing for the paper's."""
        from .models.warp_generator import needs_source

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
        :func:`headpuppet.finetune.fine_tune_person`."""
        from .finetune import fine_tune_person

        return fine_tune_person(self, person, steps=steps, reporter=reporter, **kwargs)

    # ------------------------------------------------------------------ person folders
    def save_person(self, person: Person, out_dir: str | Path, extra: dict | None = None) -> Path:
        """Write ``person`` (with its fine-tuned G/D, or the animator's) as a person folder."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "meta.json").unlink(missing_ok=True)  # incomplete until rewritten last
        gen = person.generator if person.generator is not None else self.generator
        disc = person.discriminator if person.discriminator is not None else self.discriminator
        save_file(_state(gen), str(out / "generator.safetensors"))
        if disc is not None:
            save_file(_person_disc_state(disc), str(out / "discriminator.safetensors"))
        tensors = {"psi": person.psi, "e": person.e, "points": torch.from_numpy(np.asarray(person.points, np.float32))}
        if person.w is not None:
            tensors["w"] = person.w
        if person.iris is not None:
            tensors["iris"] = torch.from_numpy(np.asarray(person.iris, np.float32))
        save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(out / "person.safetensors"))
        (out / "frames").mkdir(exist_ok=True)
        for old in (out / "frames").glob("*.png"):
            old.unlink()
        for i, f in enumerate(person.frames):
            write_image(out / "frames" / f"{i:03d}.png", f)
        if person.image is not None:
            write_image(out / "image.png", person.image)
        meta = {
            "format": PERSON_FORMAT, "version": PERSON_VERSION, "config": to_dict(self.cfg),
            "detector": self.detector_name, "has_iris": person.iris is not None,
            "num_shots": person.num_shots, "labels": person.labels, "faces_found": person.faces_found,
            "box": person.box.as_list() if person.box is not None else None,
            "finetune_steps": person.finetune_steps, "num_videos": 1,
            "base_checkpoint": self.source, **(extra or {}),
        }
        tmp = out / "meta.json.tmp"
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, out / "meta.json")
        return out


# ---------------------------------------------------------------------- the fast path
PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA with bf16 support, or a CPU with AVX-512 BF16
    or AMX (read from /proc/cpuinfo; False where that cannot be read)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: str | None, device: torch.device | str) -> str:
    """``"auto"`` -> ``"bf16"`` where :func:`native_bf16`, else ``"fp32"``; ``"fp32"``/``"bf16"`` as given."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def fold_spectral_norm(module: torch.nn.Module) -> torch.nn.Module:
    """A frozen eval-mode copy of ``module`` whose spectral-norm parametrisations are replaced by the
    weights they give in eval mode (``W / sigma`` with the stored power-iteration vectors): the same
    function, one matrix norm fewer per layer and call."""
    from torch.nn.utils import parametrize

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
    return folded.requires_grad_(False)


# ---------------------------------------------------------------------- compositing
def feather_mask(side: int, feather: float = 0.12) -> np.ndarray:
    """``(side, side)`` float32 in [0, 1]: 1 inside, a smooth ramp over the outer ``feather`` fraction."""
    r = max(1.0, feather * side)
    d = np.minimum(np.arange(side) + 0.5, side - np.arange(side) - 0.5)  # distance to the nearest edge
    ramp = np.clip(d / r, 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)                                   # smoothstep
    return np.outer(ramp, ramp).astype(np.float32)


def face_mask(points: np.ndarray, side: int, feather: float = 0.06) -> np.ndarray:
    """``(side, side)`` float32 in [0, 1]: the face region of one or more landmark sets, feathered.

    ``points`` ``(68, 2)`` or ``(n, 68, 2)`` in pixels of a ``side x side`` crop. The region is the
    convex hull of the landmarks with the eyebrows raised by a third of the brow-to-chin height (so
    the forehead is in), the union over the sets, blurred over ``feather * side`` pixels inwards:
    the edge of the mask lies inside the hull, so nothing outside the face is replaced.
    """
    import cv2

    pts = np.asarray(points, np.float32).reshape(-1, 68, 2)
    mask = np.zeros((side, side), np.float32)
    for p in pts:
        if not np.isfinite(p).all():
            continue
        brows = p[17:27].copy()
        height = p[8, 1] - brows[:, 1].mean()                 # brow-to-chin, px
        brows[:, 1] -= height / 3
        hull = cv2.convexHull(np.concatenate([p, brows]).round().astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1.0)
    r = max(1, int(round(feather * side)))
    if mask.any():
        mask = cv2.erode(mask, np.ones((r, r), np.uint8))   # the blur must not reach past the hull
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=r / 2)
    return np.clip(mask, 0, 1)


def colour_match(crop: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift ``crop``'s colours so that, inside ``mask``, their mean and spread in Lab equal
    ``reference``'s (the photo under the pasted face): a generated face takes the photo's light."""
    import cv2

    w = mask[..., None].astype(np.float32)
    if w.sum() < 16:
        return crop
    a = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    b = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).astype(np.float32)
    n = w.sum()
    ma, mb = (a * w).sum((0, 1)) / n, (b * w).sum((0, 1)) / n
    sa = np.sqrt((((a - ma) ** 2) * w).sum((0, 1)) / n) + 1e-3
    sb = np.sqrt((((b - mb) ** 2) * w).sum((0, 1)) / n) + 1e-3
    out = (a - ma) * np.clip(sb / sa, 0.5, 2.0) + mb
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def paste_back(image: np.ndarray, crop: np.ndarray, box, feather: float = 0.12,
               points: np.ndarray | None = None, match_colour: bool = True) -> np.ndarray:
    """Composite the generated ``crop`` ``(S, S, 3)`` into ``image`` at ``box``.

    With ``points`` (``(68, 2)`` or ``(n, 68, 2)`` crop px: the face in ``crop`` and, usually, the
    source's own face) only the feathered face region is replaced (:func:`face_mask`), after
    :func:`colour_match` against the photo, so the crop's square never shows; without them, the
    whole square with a feathered edge.
    """
    import cv2

    h, w = image.shape[:2]
    side = int(box.side)
    big = cv2.resize(crop, (side, side), interpolation=cv2.INTER_LINEAR if side > crop.shape[0] else cv2.INTER_AREA)
    if points is not None:
        pts = np.asarray(points, np.float32) * (side / float(crop.shape[0]))
        mask = face_mask(pts, side)
    else:
        mask = feather_mask(side, feather)
    x0, y0 = int(box.x0), int(box.y0)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    out = image.copy()
    if ix0 >= ix1 or iy0 >= iy1:
        return out
    sub = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
    region = out[iy0:iy1, ix0:ix1]
    patch, m = big[sub], mask[sub]
    if points is not None and match_colour:
        patch = colour_match(np.ascontiguousarray(patch), np.ascontiguousarray(region), m)
    m = m[..., None]
    out[iy0:iy1, ix0:ix1] = (m * patch.astype(np.float32) + (1 - m) * region.astype(np.float32)).round().clip(0, 255).astype(np.uint8)
    return out


# ---------------------------------------------------------------------- the animate pipeline
@dataclass
class AnimateResult:
    """What :func:`animate` did."""

    output: Path
    frames: int
    fps: float
    bridged: int                       # driver frames without a face, filled from neighbours
    reference: int | None              # driver reference frame (relative mode)
    several_faces: list[tuple[str, int]]
    seconds: float
    has_audio: bool
    timings: dict[str, float] = field(default_factory=dict)


def track_driver(driver: Driver, detector, size: int, reporter: Reporter | None = None):
    """Pass 1 over the driver: landmarks per frame, ONE stable crop box, landmarks in crop px.

    Returns ``(points (T, 68, 2) crop px, found (T,), iris (T, 2, 3) | None, box)``.
    """
    from .media.crop import face_crop_box, iris_to_crop, to_crop

    reporter = reporter or NULL
    detector.reset()
    pts, found, irises = [], [], []
    hw = (driver.height, driver.width)
    has_iris = getattr(detector, "has_iris", False)
    with reporter.task("landmarks", total=driver.num_frames) as task:
        for frame in driver.frames():
            hw = frame.shape[:2]
            faces = detector.detect(frame)
            if faces:
                face = max(faces, key=lambda f: f.area)
                pts.append(face.points)
                irises.append(face.iris if face.iris is not None else np.full((2, 3), np.nan, np.float32))
                found.append(True)
            else:
                pts.append(np.full((68, 2), np.nan, np.float32))
                irises.append(np.full((2, 3), np.nan, np.float32))
                found.append(False)
            task.advance(1)
    points = np.stack(pts) if pts else np.zeros((0, 68, 2), np.float32)
    found_arr = np.asarray(found, bool)
    if not found_arr.any():
        raise NoFaceError(f"no face found in any frame of the driver {driver.path}; use a video that shows a face")
    box = face_crop_box(points[found_arr], hw)
    points = to_crop(points, box, size)
    iris = None
    if has_iris:
        iris_arr = np.stack(irises)
        if np.isfinite(iris_arr[found_arr]).all():
            iris = iris_to_crop(iris_arr, box, size)
    return points, found_arr, iris, box


def animate(animator: Animator, person: Person, driver: Driver, output: str | Path, *, detector=None,
            relative: bool = True, smooth: float = 1.0, side_by_side: bool = False, paste: bool = False,
            batch_size: int = 8, amp: str | None = None, channels_last: bool = False,
            reporter: Reporter | None = None) -> AnimateResult:
    """Animate ``person`` with ``driver`` into the video ``output`` (driver's fps, frame count, audio).

    Pass 1 finds the driver's landmarks (one stable crop box), bridges frames without a face,
    smooths and (``relative``) retargets them onto the person (:mod:`headpuppet.retarget`); pass 2
    decodes again, renders with G in batches and encodes. ``side_by_side`` writes driver crop |
    result; ``paste`` composites the result back into the person's full first image.
    """
    from .media.crop import crop_frame
    from .retarget import prepare_track
    from .media.video import VideoWriter

    reporter = reporter or NULL
    output = Path(output)
    if paste and (person.image is None or person.box is None):
        raise MediaError("--paste-back needs the full source photo, which this source does not have")
    detector = detector or animator.make_detector()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    points, found, iris, box = track_driver(driver, detector, animator.size, reporter)
    timings["landmarks"] = time.perf_counter() - t0
    src_iris = person.iris[0] if person.iris is not None else None
    track = prepare_track(points, found, iris, smooth=smooth, relative=relative, source=person.points[0],
                          source_iris=src_iris, reference="neutral")
    drv_iris = track.iris if animator.uses_iris else None
    t_render = 0.0
    n = 0
    with VideoWriter(output, driver.fps, audio_from=driver.path if driver.is_video else None) as writer, \
            reporter.task("frames", total=len(track.points)) as task:
        batch: list[np.ndarray] = []

        def flush() -> None:
            nonlocal t_render, n
            if not batch:
                return
            idx = slice(n, n + len(batch))
            t = time.perf_counter()
            fakes = animator.render(person, track.points[idx], None if drv_iris is None else drv_iris[idx],
                                    batch_size=len(batch), amp=amp, channels_last=channels_last)
            t_render += time.perf_counter() - t
            for j, (frame, fake) in enumerate(zip(batch, fakes)):
                if paste:
                    # the face region of both the rendered frame and the photo's own face
                    out = paste_back(person.image, fake, person.box,
                                     points=np.stack([track.points[n + j], person.points[0]]))
                else:
                    out = fake
                if side_by_side:
                    drv = crop_frame(frame, box, animator.size)
                    if out.shape[0] != drv.shape[0]:
                        import cv2

                        drv = cv2.resize(drv, (out.shape[0], out.shape[0]))
                    out = np.concatenate([drv, out], axis=1)
                writer.write(out)
            task.advance(len(batch))
            n += len(batch)
            batch.clear()

        for frame in driver.frames():
            if n + len(batch) >= len(track.points):
                break  # the decoder gave more frames than pass 1 saw: keep the counts equal
            batch.append(frame)
            if len(batch) == batch_size:
                flush()
        flush()
        if n != len(track.points):
            raise MediaError(f"{driver.path}: the second read gave {n} frames, the first {len(track.points)}")
    timings["render"] = t_render
    seconds = time.perf_counter() - t0
    return AnimateResult(output, n, driver.fps, track.bridged, track.reference, person.several_faces(), seconds,
                         bool(driver.has_audio), timings)


# ---------------------------------------------------------------------- small helpers
def _pm(pm):
    if pm is None:
        from .plugins import make_plugin_manager

        pm = make_plugin_manager()
    return pm


def _detector_from_meta(meta: dict) -> str:
    """The landmark detector the training data was made with, as recorded in the checkpoint."""
    for key in ("detector", "landmarks"):
        v = meta.get(key)
        if isinstance(v, str) and v:
            return v
    plugins = meta.get("plugins")
    if isinstance(plugins, dict):
        v = plugins.get("landmarks") or plugins.get("detector")
        if isinstance(v, str) and v:
            return v
    return DEFAULT_DETECTOR


def _read_person_meta(path: Path) -> dict:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        raise CheckpointError(f"{path}: not a person folder (no readable meta.json); "
                              f"make one with `headpuppet fine-tune`") from None
    if not isinstance(meta, dict) or meta.get("format") != PERSON_FORMAT:
        raise CheckpointError(f"{path}: not a person folder written by `headpuppet fine-tune`")
    num = (int, float)
    types = {"version": int, "config": dict, "num_videos": int, "finetune_steps": int, "detector": str,
             "labels": list, "faces_found": list, "box": (list, type(None))}
    for key, tp in types.items():
        if key in meta and (not isinstance(meta[key], tp) or isinstance(meta[key], bool)):
            raise CheckpointError(f"{path}/meta.json: '{key}' has the wrong type ({type(meta[key]).__name__}); "
                                  f"the person folder is broken, run `headpuppet fine-tune` again")
    if "config" not in meta or (meta.get("box") and (len(meta["box"]) != 3
                                                     or not all(isinstance(v, num) for v in meta["box"]))):
        raise CheckpointError(f"{path}/meta.json has no config or a bad box; the person folder is broken, "
                              f"run `headpuppet fine-tune` again")
    if meta.get("version", 0) > PERSON_VERSION:
        raise CheckpointError(f"{path}: person folder version {meta.get('version')} is newer than this "
                              f"headpuppet understands; upgrade headpuppet")
    return meta


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share memory
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def _person_disc_state(disc: torch.nn.Module) -> dict[str, torch.Tensor]:
    """D's weights with ``W`` cut to one row: a person uses its own ``w'``, and the meta-learning
    rows (one per training video, 145k x 512 for VoxCeleb2) do not belong in a person folder."""
    state = _state(disc)
    W = getattr(disc, "W", None)
    if isinstance(W, torch.Tensor):
        for name, p in disc.named_parameters():
            if p is W:
                state[name] = state[name][:1].clone()
    return state


def clone_module(module: torch.nn.Module) -> torch.nn.Module:
    """An independent copy (fine-tuning must not change the base model)."""
    return copy.deepcopy(module)

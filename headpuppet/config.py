"""Typed configuration: dataclasses, YAML presets, dotted overrides.

Precedence is CLI flags > ``--set key=value`` overrides > YAML file > preset (or, on resume, the
checkpoint's config) > defaults, resolved in one place (:func:`load_config`). Unknown keys
and values of the wrong type are :class:`ConfigError` s naming the key. The resolved config is saved
with every run and inside every checkpoint, so a checkpoint folder alone rebuilds its networks.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

PRESETS_DIR = Path(__file__).parent / "presets"


@dataclass
class ModelConfig:
    """Network sizes (paper, section 3.2 and appendix)."""

    image_size: int = 256            # side of frames and landmark images
    ch: int = 64                     # channels of the first block; doubled per downsampling
    max_ch: int = 512                # channel cap
    emb_dim: int = 512               # N, size of the embedding e and of D's projection vectors
    gen_bottleneck: int = 16         # resolution at which G's encoder stops downsampling
    gen_res_blocks: int = 5          # AdaIN residual blocks at the bottleneck
    attention_down: list[int] = field(default_factory=lambda: [32])  # self-attention resolutions, every downsampling path
    attention_up: list[int] = field(default_factory=lambda: [64])    # self-attention resolutions, G's upsampling path
    spectral_norm: bool = True       # on every conv and linear layer
    iris: bool = False               # draw irises into landmark images (gaze reaches G)
    discriminator: str = "projection"  # discriminator plugin name
    disc_scales: int = 2             # for multi-scale discriminator variants
    generator: str = "paper"         # "paper" (G(y; psi)) or "warp" (warp-guided, headpuppet.models.warp_generator)
    projection_sn: bool = True       # spectral norm on P (psi = P e); false lets e modulate AdaIN freely
    disc_pool: str = "sum-relu"      # D's V: "sum-relu" (the paper: ReLU after sum pooling) or "relu-sum" (BigGAN)


@dataclass
class LossConfig:
    """Loss weights (paper, eqs. 2-6)."""

    perceptual: dict[str, float] = field(default_factory=lambda: {"vgg19": 1e-2, "vggface": 2e-3})
    perceptual_layers: dict[str, list[int]] = field(
        default_factory=lambda: {"vgg19": [1, 6, 11, 20, 29], "vggface": [1, 6, 11, 18, 25]})
    adv: float = 1.0                 # weight of -D(x_hat)
    fm: float = 10.0                 # feature matching over D's block activations
    mch: float = 80.0                # L1(e_i, W_i)
    generated_l1: float = 0.0        # warp-guided G: L1 of its own drawing (before the blend) to the target
    ssim: float = 0.0                # 1 - SSIM(x_hat, x) (beyond the paper; the structure evaluate measures)


@dataclass
class TrainConfig:
    """Meta-learning schedule (paper, section 4)."""

    steps: int = 1_000_000
    batch_size: int = 2              # episodes per step per process
    k_shots: int = 8                 # K
    lr_g: float = 5e-5               # Adam, E and G
    lr_d: float = 2e-4               # Adam, D
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    ema: float = 0.0                 # moving average of G's weights; 0 disables
    seed: int = 0
    num_workers: int = 2             # DataLoader workers
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 5000
    keep_checkpoints: int = 3
    amp: str = "none"                # "none", "bf16" autocast, or "auto": bf16 where the device computes it natively
    channels_last: bool | str = False  # or "auto": channels-last when amp resolves to bf16
    warp_source: str = "nearest"     # warp-guided G: which shot it warps in training, "nearest" or "random"
    flip: float = 0.0                # probability of mirroring an episode left-right (beyond the paper)


@dataclass
class FinetuneConfig:
    """Few-shot fine-tuning on T frames of a new person (paper, section 3.4)."""

    steps: int = 40
    batch_size: int = 4
    lr_g: float = 5e-5
    lr_d: float = 2e-4
    preview_every: int = 20


@dataclass
class Config:
    preset: str = "paper-256"
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def _check(value: Any, tp: Any, key: str) -> Any:
    """Coerce ``value`` to the annotated type ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"config key '{key}': {value!r} is not a {tp}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return _from_dict(tp, value, key + ".")
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_check(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        kt, vt = typing.get_args(tp) or (Any, Any)
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return {_check(k, kt, key): _check(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
    return value


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; known keys under "
                          f"'{prefix or '.'}': {', '.join(sorted(names))}")
    kwargs = {k: _check(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def from_dict(data: dict) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of keys, got {type(data).__name__}")
    cfg = _from_dict(Config, data)
    check_ranges(cfg)
    return cfg


# (section.key, lowest allowed, upper bound (excluded) or None, lowest excluded too?)
_RANGES = [
    ("model.image_size", 8, None, False), ("model.ch", 1, None, False), ("model.max_ch", 1, None, False),
    ("model.emb_dim", 1, None, False), ("model.gen_bottleneck", 1, None, False),
    ("model.gen_res_blocks", 0, None, False), ("model.disc_scales", 1, None, False),
    ("loss.adv", 0, None, False), ("loss.fm", 0, None, False), ("loss.mch", 0, None, False),
    ("loss.generated_l1", 0, None, False), ("loss.ssim", 0, None, False),
    ("train.steps", 1, None, False), ("train.batch_size", 1, None, False), ("train.k_shots", 1, None, False),
    ("train.lr_g", 0, None, True), ("train.lr_d", 0, None, True), ("train.ema", 0, 1, False),
    ("train.num_workers", 0, None, False), ("train.log_every", 1, None, False),
    ("train.sample_every", 0, None, False), ("train.checkpoint_every", 0, None, False),
    ("train.keep_checkpoints", 0, None, False), ("train.seed", 0, None, False),
    ("finetune.steps", 0, None, False), ("finetune.batch_size", 1, None, False),
    ("finetune.lr_g", 0, None, True), ("finetune.lr_d", 0, None, True), ("finetune.preview_every", 0, None, False),
]


def check_ranges(cfg: Config) -> None:
    """Numbers outside their meaningful range (``train.steps=-5``, a NaN learning rate) are a
    :class:`ConfigError` naming the key, before anything is built or written."""
    def bad(key: str, value: Any, what: str) -> ConfigError:
        return ConfigError(f"config key '{key}' must be {what}, got {value!r}")

    for key, lo, hi, open_lo in _RANGES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not math.isfinite(value):
            raise bad(key, value, "a finite number")
        if (value <= lo) if open_lo else (value < lo):
            raise bad(key, value, f"{'greater than' if open_lo else 'at least'} {lo}")
        if hi is not None and value >= hi:
            raise bad(key, value, f"below {hi}")
    for key, weights in (("loss.perceptual", cfg.loss.perceptual),):
        for name, w in weights.items():
            if not math.isfinite(w) or w < 0:
                raise bad(f"{key}.{name}", w, "a finite weight of at least 0")
    if len(cfg.train.betas) != 2 or not all(math.isfinite(b) and 0 <= b < 1 for b in cfg.train.betas):
        raise bad("train.betas", cfg.train.betas, "two numbers in [0, 1)")
    if not (math.isfinite(cfg.train.flip) and 0 <= cfg.train.flip <= 1):
        raise bad("train.flip", cfg.train.flip, "a probability in [0, 1]")
    if cfg.train.warp_source not in ("nearest", "random"):
        raise bad("train.warp_source", cfg.train.warp_source, "'nearest' or 'random'")
    if cfg.train.amp not in ("none", "bf16", "fp32", "", "auto"):
        raise bad("train.amp", cfg.train.amp, "none, bf16 or auto")
    if cfg.train.channels_last not in (True, False, "auto"):
        raise bad("train.channels_last", cfg.train.channels_last, "true, false or auto")


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("perceptual", "perceptual_layers"):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path) -> dict:
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a YAML file of config keys")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a UTF-8 text file; give a YAML file of config keys") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror or type(exc).__name__})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.ch=32"`` -> (["model", "ch"], 32); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value (e.g. model.ch=32)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _nested(keys: list[str], value: Any) -> dict:
    """``(["model", "ch"], 32)`` -> ``{"model": {"ch": 32}}``."""
    for k in reversed(keys):
        value = {k: value}
    return value


def load_config(preset: str | None = None, config_file: str | Path | None = None,
                overrides: list[str] | dict | None = None, flags: dict[str, Any] | None = None,
                saved: dict | None = None) -> Config:
    """Resolve a :class:`Config`: the one layering every command that builds a config uses.

    Layers, each over the ones before: defaults < ``preset`` (or ``saved``) < ``config_file`` <
    ``overrides`` (``--set``) < ``flags``. Mappings merge key by key, except ``loss.perceptual`` and
    ``loss.perceptual_layers``, which a later layer replaces whole (a new set of networks, not an
    addition to the preset's).

    Args:
        preset: a preset name (``headpuppet/presets/NAME.yaml``) or a path to a YAML file.
        config_file: a YAML file applied over the preset.
        overrides: ``["model.ch=32", ...]`` or a nested dict.
        flags: command-line options as ``{"train.steps": 10, ...}``; ``None`` values are options
            not given.
        saved: a checkpoint's config (the ``config`` of its metadata), the base when resuming; it
            stands in for ``preset``.
    """
    data: dict = dict(saved) if saved is not None else {}
    if preset is not None:
        path = Path(preset)
        if not path.suffix:
            path = PRESETS_DIR / f"{preset}.yaml"
            if not path.exists():
                raise ConfigError(f"unknown preset '{preset}'; available: {', '.join(available_presets())}")
        elif not path.exists():
            raise ConfigError(f"config file {preset} does not exist")
        data = _merge(data, _read_yaml(path))
        data.setdefault("preset", path.stem)
    if config_file is not None:
        path = Path(config_file)
        if not path.exists():
            raise ConfigError(f"config file {config_file} does not exist")
        data = _merge(data, _read_yaml(path))
    if isinstance(overrides, dict):
        data = _merge(data, overrides)
    else:
        for text in overrides or []:
            data = _merge(data, _nested(*parse_override(text)))
    for key, value in (flags or {}).items():
        if value is not None:
            data = _merge(data, _nested(key.split("."), value))
    return from_dict(data)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

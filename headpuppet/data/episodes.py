"""K-shot episodes for meta-learning (Zakharov et al. 2019, section 3.2).

Each episode comes from one video ``i``: ``K`` frames with their landmark images feed the embedder,
and one *different* frame ``t`` of the same video (with its landmark image ``y_i(t)``) is the target
the generator must reproduce. Landmark images are drawn on the fly from the stored landmarks with
:func:`headpuppet.media.landmarks.rasterise` (they are never stored on disk), at the training size.

Determinism: an episode is a pure function of ``(seed, epoch, video, repeat)`` (numpy
``default_rng([seed, epoch, video, repeat])``), so DataLoader workers, ranks and a resumed run all
draw exactly the same frames; see :class:`headpuppet.training.distributed.EpisodeBatchSampler` for
the order of videos.

Short videos: a video with fewer than ``K + 1`` frames (but at least 2) still yields episodes; its
``K`` shots are drawn *with replacement* from the frames other than the target, so the target is
never among the shots. Videos with fewer than 2 frames cannot give a distinct target and are
skipped; ``EpisodeDataset.skipped`` lists their ids (the loop reports the count).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, MediaError
from ..media.imaging import to_tensor
from ..media.landmarks import mirror_iris, mirror_points, rasterise
from .format import resize_frame

#: epoch number used for the fixed preview episodes of sample grids (never a training epoch)
PREVIEW_EPOCH = 2**31 - 1


class EpisodeDataset(torch.utils.data.Dataset):
    """Episodes of a preprocessed dataset.

    Args:
        index: a :class:`headpuppet.data.format.DatasetIndex` (``.size``, ``.has_iris``, ``.videos``).
        k_shots: K, frames per episode for the embedder.
        size: side of the returned images; frames stored at another size are resized (INTER_AREA
            down, cubic up) and their landmarks scaled with them.
        iris: draw irises into the landmark images (needs a dataset made with an iris detector).
        seed: base seed of the frame choice.
        warp_source: ``"random"`` adds ``shot_allowed`` ``(K,)`` bool with one random shot allowed:
            the warp-guided generator then warps that shot instead of the nearest in pose.
        flip: probability that an episode (its shots and target together) is mirrored left-right,
            landmarks renumbered (:func:`headpuppet.media.landmarks.mirror_points`): a mirrored face
            is a plausible new one, which a small dataset needs against memorising its few people.

    Item (for key ``video`` or ``(epoch, video[, repeat])``), a dict of tensors:
        ``shots`` ``(K, 3, S, S)``, ``shot_landmarks`` ``(K, 3, S, S)``, ``target`` ``(3, S, S)``,
        ``target_landmarks`` ``(3, S, S)`` (float32 in [-1, 1]), ``shot_points`` ``(K, 68, 2)`` and
        ``target_points`` ``(68, 2)`` (float32 crop pixels, for the warp-guided generator), ``video_idx`` ``()`` long (row of
        the discriminator's ``W``), ``frame_idx`` ``(K + 1,)`` long (target first; for inspection).
    """

    def __init__(self, index, k_shots: int, size: int | None = None, iris: bool = False, seed: int = 0,
                 warp_source: str = "nearest", flip: float = 0.0):
        if k_shots < 1:
            raise ConfigError(f"train.k_shots must be at least 1, got {k_shots}")
        if iris and not index.has_iris:
            raise ConfigError("model.iris is on but the dataset has no iris landmarks; preprocess with an "
                              "iris-capable detector (mediapipe) or set model.iris=false")
        self.index = index
        self.k = int(k_shots)
        self.size = int(size or index.size)
        self.iris = bool(iris)
        self.seed = int(seed)
        if warp_source not in ("nearest", "random"):
            raise ConfigError(f"train.warp_source must be 'nearest' or 'random', got {warp_source!r}")
        self.warp_source = warp_source
        if not 0.0 <= float(flip) <= 1.0:
            raise ConfigError(f"train.flip must be a probability in [0, 1], got {flip}")
        self.flip = float(flip)
        self.videos = [v for v in index.videos if v.num_frames >= 2]
        self.skipped = [v.id for v in index.videos if v.num_frames < 2]
        if not self.videos:
            raise MediaError("the dataset has no video with at least 2 frames; preprocess more footage")

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def num_videos(self) -> int:
        """Rows of the discriminator's ``W`` (one per usable video)."""
        return len(self.videos)

    def choose_frames(self, num_frames: int, epoch: int, video: int, repeat: int = 0) -> np.ndarray:
        """``(K + 1,)`` frame numbers, target first, never repeating the target among the shots."""
        rng = np.random.default_rng([self.seed, int(epoch), int(video), int(repeat)])
        if num_frames >= self.k + 1:
            return rng.choice(num_frames, self.k + 1, replace=False)
        target = int(rng.integers(num_frames))
        others = np.array([f for f in range(num_frames) if f != target])
        return np.concatenate([[target], rng.choice(others, self.k, replace=True)])

    def _image(self, record, i: int) -> np.ndarray:
        return resize_frame(record.frame(int(i)), self.size)

    def _points(self, record, i: int) -> np.ndarray:
        """``(68, 2)`` landmarks of frame ``i`` in pixels of the returned ``S x S`` images."""
        return np.asarray(record.landmarks[int(i)], dtype=np.float32) * (self.size / float(self.index.size))

    def _landmark_image(self, record, i: int, points: np.ndarray, flip: bool = False) -> np.ndarray:
        """The landmark image of frame ``i`` from its ``points`` (:meth:`_points`, mirrored when ``flip``)."""
        iris = None
        if self.iris and record.iris is not None:
            iris = np.asarray(record.iris[int(i)], dtype=np.float32) * (self.size / float(self.index.size))
            if flip:
                iris = mirror_iris(iris, self.size)
        return rasterise(points, self.size, iris=iris)

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        if isinstance(key, (tuple, list)):
            epoch, video, repeat = (list(key) + [0])[:3]
        else:
            epoch, video, repeat = 0, int(key), 0
        record = self.videos[int(video)]
        frames = self.choose_frames(record.num_frames, epoch, video, repeat)
        images = np.stack([self._image(record, f) for f in frames])          # (K+1, S, S, 3)
        points = np.stack([self._points(record, f) for f in frames])         # (K+1, 68, 2) crop px
        flip = self.flip > 0 and np.random.default_rng([self.seed, int(epoch), int(video), int(repeat), 2]).random() < self.flip
        if flip:  # the whole episode, so shots and target stay one (mirrored) person
            images = np.ascontiguousarray(images[:, :, ::-1])
            points = mirror_points(points, self.size).astype(np.float32)
        marks = np.stack([self._landmark_image(record, f, p, flip) for f, p in zip(frames, points)])  # (K+1, S, S, 3)
        images, marks = to_tensor(images), to_tensor(marks)                  # (K+1, 3, S, S)
        points = torch.from_numpy(points)
        extra = {}
        if self.warp_source == "random":
            # the warp-guided G warps one random shot, not the nearest in pose: what a single photo
            # gives at inference, and errors of the warp for G to learn to correct
            pick = np.random.default_rng([self.seed, int(epoch), int(video), int(repeat), 1]).integers(self.k)
            extra["shot_allowed"] = torch.arange(self.k) == int(pick)
        return {
            **extra,
            "shot_points": points[1:], "target_points": points[0],
            "shots": images[1:], "shot_landmarks": marks[1:],
            "target": images[0], "target_landmarks": marks[0],
            "video_idx": torch.tensor(int(video), dtype=torch.long),
            "frame_idx": torch.from_numpy(frames.astype(np.int64)),
        }

    def preview_batch(self, n: int = 4) -> dict[str, torch.Tensor]:
        """A fixed batch of up to ``n`` episodes (first videos, preview epoch) for sample grids."""
        items = [self[(PREVIEW_EPOCH, v, 0)] for v in range(min(n, len(self)))]
        return collate(items)


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items into a batch: ``shots`` ``(B, K, 3, S, S)``, ``target`` ``(B, 3, S, S)``, ..."""
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}

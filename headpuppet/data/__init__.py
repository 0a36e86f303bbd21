"""Data: videos and images in -> a dataset folder out; a dataset folder in -> K-shot episodes out.

The meta-learning stage of Zakharov et al. 2019 (Sec. 3.2) draws, per episode, one video and K+1
of its frames with their landmarks; ``headpuppet preprocess`` writes the frames and landmarks once,
in the format documented in ``docs/dataset-format.md``, so training never decodes video.

In order of the data path:

* :mod:`.preprocess` - ``preprocess(inputs, out, ...)``: video files / folders of frames -> dataset
  folder, with a :class:`~.preprocess.Summary` of what was done, skipped and failed. Its jobs:
  :mod:`.discover` (INPUT arguments -> sorted items with unique ids), :mod:`.extract` (one video ->
  crops + 68 landmarks), :mod:`.workers` (the same in spawned processes), :mod:`.preview`
  (``preview.png`` of crops and landmark images);
* :mod:`.format` - the on-disk dataset: the writer (``PendingVideo``) and the reader (``open_dataset``);
* :mod:`.episodes` - dataset -> torch ``EpisodeDataset`` of K-shot episodes (shots, their landmark
  images, a target frame and its landmark image), and ``collate``.
"""

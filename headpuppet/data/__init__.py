"""The preprocessed dataset: on-disk format (:mod:`headpuppet.data.format`), episode sampling and the
torch datasets built on it.

The meta-learning stage of Zakharov et al. 2019 (Sec. 3.2) draws, per episode, one video and K+1
of its frames with their landmarks; ``headpuppet preprocess`` writes the frames and landmarks once,
in the format documented in ``docs/dataset-format.md``, so training never decodes video.
"""

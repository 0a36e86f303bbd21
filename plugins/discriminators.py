"""First-party discriminator plugins.

* ``projection`` -- the paper's projection discriminator (Zakharov et al. 2019, sections 3.2 and 4);
* ``multiscale`` -- the same discriminator applied at ``model.disc_scales`` image scales, sharing
  one ``W`` / ``w0`` / ``b`` across scales.

Factories take ``(mcfg: ModelConfig, num_videos: int)``; see
:mod:`headpuppet.models.discriminator`.
"""

from __future__ import annotations

from headpuppet import hookimpl


def _projection(mcfg, num_videos: int):
    from headpuppet.models.discriminator import ProjectionDiscriminator  # lazy: torch, +1.4 s at start-up (measured)

    return ProjectionDiscriminator(mcfg, num_videos)


def _multiscale(mcfg, num_videos: int):
    from headpuppet.models.discriminator import MultiScaleDiscriminator  # lazy: torch (CLI start-up)

    return MultiScaleDiscriminator(mcfg, num_videos)


@hookimpl
def register_discriminators(register):
    register("projection", _projection)
    register("multiscale", _multiscale)

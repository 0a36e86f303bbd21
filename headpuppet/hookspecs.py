"""The plugin API of headpuppet (pluggy project name ``"headpuppet"``).

A plugin is a module (or object) with functions decorated by ``@headpuppet.hookimpl`` whose names
match the hooks below. Register-style hooks receive a ``register`` callable and call it once per
component they provide::

    from headpuppet import hookimpl

    @hookimpl
    def register_landmark_detectors(register):
        register("my-detector", MyDetector)

Installed packages are found through the entry-point group ``headpuppet``; see
``plugins/README.md`` for the plugin author's guide.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("headpuppet")


@hookspec
def register_landmark_detectors(register):
    """Register landmark detectors.

    Call ``register(name, factory, unavailable=None)`` for each detector. ``factory(**options)``
    returns an object following :class:`headpuppet.protocols.LandmarkDetector`:
    ``detect(frame: (H, W, 3) uint8 RGB) -> list[Face]`` (largest face first, ``[]`` for none), with
    68 points in pixels and optional ``(2, 3)`` iris ``(cx, cy, r)``. Pass
    ``unavailable="one line saying what to install"`` to list a detector whose dependencies are
    missing: it shows in ``headpuppet plugins`` and asking for it fails with that line.

    .. versionadded:: 0.1
    """


@hookspec
def register_perceptual_losses(register):
    """Register perceptual-loss networks for the content loss L_CNT.

    Call ``register(name, factory)``; ``factory(weights_dir: Path | None = None, device="cpu",
    layers: list[int] | None = None)`` returns a
    frozen ``nn.Module`` following :class:`headpuppet.protocols.PerceptualNetwork`: called on
    ``(B, 3, H, W)`` images in ``[-1, 1]`` it returns the list of compared activations. A factory
    whose weights are missing raises :class:`headpuppet.errors.WeightsMissingError` naming the
    ``headpuppet weights ...`` command that fixes it.

    .. versionadded:: 0.1
    """


@hookspec
def register_discriminators(register):
    """Register discriminator variants.

    Call ``register(name, factory)``; ``factory(mcfg: ModelConfig, num_videos: int)``
    returns an ``nn.Module`` with

    * ``forward(x, y, video_idx=None, w=None) -> (score (B,), features list[Tensor])`` where ``x``
      and ``y`` are ``(B, 3, H, W)`` frames and landmark images in ``[-1, 1]``; the projection
      vector is ``W[video_idx] + w0`` unless ``w`` ``(B, N)`` is given (fine-tuning passes w');
    * parameters ``W`` ``(num_videos, N)``, ``w0`` ``(N,)`` and ``b`` ``(1,)``.

    .. versionadded:: 0.1
    """


@hookspec
def register_metrics(register):
    """Register evaluation metrics for ``headpuppet evaluate``.

    Call ``register(name, factory, label=..., higher_is_better=..., decimals=...)``;
    ``factory(weights_dir: Path | None = None, device="cpu")`` returns an object following
    :class:`headpuppet.evaluation.Metric`. The keywords give the metric's column in the report
    (header, arrow, digits; when left out, the factory's or the metric's attributes of those
    names, else the name, no arrow and 3 digits), known even when the factory fails. A metric
    whose weights are missing raises :class:`headpuppet.errors.WeightsMissingError` from its
    factory; evaluation then shows it as not computed, with the fixing command, and computes the
    rest.

    .. versionadded:: 0.1
    """


@hookspec
def register_weights(register):
    """Register pretrained-weights files managed by ``headpuppet weights``.

    Call ``register(spec: WeightSpec)`` with the original source URL, its sha256, licence and a
    converter from the original format to a state dict saved as ``NAME.safetensors``.

    .. versionadded:: 0.1
    """


@hookspec
def register_commands(app):
    """Add commands to the ``headpuppet`` Typer app.

    ``app`` is the root :class:`typer.Typer`; decorate functions with ``@app.command()`` or add a
    sub-app with ``app.add_typer(...)``. Commands appear in ``headpuppet --help`` and in
    ``headpuppet plugins`` as kind ``command``.

    .. versionadded:: 0.1
    """

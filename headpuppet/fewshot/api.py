"""The Python API of the few-shot stage: what ``headpuppet animate`` and ``headpuppet fine-tune`` call.

    import headpuppet

    result = headpuppet.animate("photo.jpg", "driver.mp4", "out.mp4")          # the demo model
    headpuppet.fine_tune(["frames/"], "person/", checkpoint="runs/00003-paper-256-k8", steps=40)
    headpuppet.animate("person/", "driver.mp4", "person.mp4")                  # the fine-tuned person
    model = headpuppet.load_model("runs/00003-paper-256-k8", device="cpu")    # an Animator

The CLI commands are thin wrappers over these functions (they parse options and print); the
functions check their input the same way, and raise :class:`~headpuppet.errors.HeadpuppetError`
subclasses with a one-line message for anything a person can fix (the messages name the CLI's
options, e.g. ``-o``, since that is where most calls come from).

Only light imports at module level: ``import headpuppet`` imports this module, and the CLI's start-up
must not pay for torch. Each function imports the heavy modules it needs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

from ..devices import resolve_device, tune_allocator
from ..errors import CheckpointError, MediaError
from ..outputs import check_not_input, check_writable_dir, check_writable_file

if TYPE_CHECKING:  # annotations only (they are strings at run time: `from __future__ import annotations`)
    from ..progress import Reporter
    from .animator import Animator
    from .person import Person
    from .pipeline import AnimateResult

PathLike = Union[str, Path]


def load_model(checkpoint: PathLike | None = None, *, device: str | None = None, precision: str = "auto",
               pm=None) -> "Animator":
    """Load a trained model, ready to embed new people and render them.

    Args:
        checkpoint: a run folder (its latest checkpoint) or a checkpoint folder written by
            ``headpuppet meta-train``; None takes the default model shipped in ``weights/demo``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; None or ``"auto"``: CUDA where torch sees it, else the CPU.
        precision: how G renders: ``"auto"`` (bf16 where the device computes it natively), ``"fp32"``, ``"bf16"``.
        pm: a plugin manager (:func:`headpuppet.plugins.make_plugin_manager`); None makes the default one.

    Returns:
        an :class:`~headpuppet.fewshot.animator.Animator`: ``prepare_source(images)`` gives a
        :class:`~headpuppet.fewshot.person.Person`, ``render(person, points)`` frames
        ``(B, S, S, 3) uint8``.

    Raises:
        CheckpointError: no checkpoint there, or one that cannot be read.
        DeviceError: a device this machine does not have.
    """
    from .animator import Animator, resolve_checkpoint  # lazy: torch, +1.4 s on `headpuppet --help` (measured)

    tune_allocator()
    return Animator.from_checkpoint(resolve_checkpoint(checkpoint), device=str(resolve_device(device)), pm=pm,
                                    precision=precision)


def animate(sources: PathLike | Sequence[PathLike], driver: PathLike, output: PathLike | None = None, *,
            checkpoint: PathLike | None = None, finetune_steps: int | None = None, relative: bool = True,
            smooth: float = 1.0, side_by_side: bool = False, paste: bool = False, device: str | None = None,
            batch_size: int = 8, precision: str = "auto", detector: str | None = None, shots: int = 8,
            fps: float = 25.0, compile: bool = False, pm=None,
            reporter: "Reporter | None" = None) -> "AnimateResult":
    """Make the SOURCE person move and talk like the DRIVER; write a video (``headpuppet animate``).

    Zakharov et al. 2019, section 4 ("puppeteering"), after the few-shot fine-tuning of section 3.4
    on the source shots (by default; ``finetune_steps=0`` renders feed-forward).

    Args:
        sources: a photo, several photos, a folder of photos, a video (``shots`` frames sampled) or
            a fine-tuned person folder (``headpuppet fine-tune`` / :func:`fine_tune` output).
        driver: a video, or a folder of frames played at ``fps``. (Cameras and streams: ``headpuppet live``.)
        output: the video to write; None: ``<source>_<driver>.mp4`` in the current folder. It is
            checked before any work (a video name, writable, not one of the inputs).
        checkpoint: run or checkpoint folder; None: the default model in ``weights/demo``.
            Ignored for a person folder, which brings its own networks.
        finetune_steps: fine-tune G and D on the source shots first; None: the model's own
            ``finetune.steps`` (40 for the default model; none for a fine-tuned person folder or a
            model without a discriminator); 0: feed-forward.
        relative: move the source's own landmarks by the driver's motion (keeps its face shape);
            False drives with the driver's landmarks as they are.
        smooth: temporal smoothing of the driver's landmarks (Gaussian sigma in frames; 0: none).
        side_by_side: write driver crop | result.
        paste: put the result back into the full source photo (feathered, colour-matched).
        device: as for :func:`load_model`.
        batch_size: frames per generator pass.
        precision: as for :func:`load_model`.
        detector: landmark detector plugin; None: the one the model was trained with.
        shots: frames sampled when a source is a video.
        fps: frame rate when the driver is a folder of frames.
        compile: run G through :func:`torch.compile` (needs a C++ compiler on the CPU): a one-off
            compile of tens of seconds, then faster frames; pays on long drivers and large models.
            Where it cannot compile, G runs as without it (a warning says why).
        pm: a plugin manager; None makes the default one.
        reporter: progress and warnings (:class:`headpuppet.progress.Reporter`); None: silent.

    Returns:
        an :class:`~headpuppet.fewshot.pipeline.AnimateResult`: the output path, frames, fps,
        bridged driver frames, the driver's reference frame, sources with several faces, seconds,
        whether the driver's audio was kept, timings and the device.

    Raises:
        MediaError, NoFaceError, CheckpointError, DeviceError: one-line messages saying what to do.
    """
    from ..plugins import make_plugin_manager  # here: `import headpuppet` (every plugin's) stays without it
    from .drivertrack import DriverTrackJob
    from .sources import open_driver

    tune_allocator()
    sources = _as_list(sources)
    out = Path(output) if output is not None else default_output(sources, driver)
    check_writable(out)                                   # before any work
    check_not_input(out, [("source", s) for s in sources]
                    + [("driver", driver), ("checkpoint", checkpoint)], "-o", inside=False)
    drv = open_driver(driver, fps=fps)                    # unreadable driver: fail early too
    pm = pm if pm is not None else make_plugin_manager()  # one for the helper's check and the model
    # the driver's landmarks in a helper process while torch imports and the model loads (the same
    # landmarks; render_video detects them itself when the model wants another detector)
    track = DriverTrackJob.start(drv, detector, pm=pm)
    try:
        from .pipeline import render_video  # lazy: torch, +1.4 s on `headpuppet --help` (measured)
        from .session import load_person

        device = str(resolve_device(device))
        t0 = time.perf_counter()
        loaded = load_person(sources, checkpoint=checkpoint, device=device, pm=pm, detector=detector,
                             shots=shots, finetune_steps=finetune_steps, reporter=reporter, precision=precision)
        t_person = time.perf_counter() - t0
        result = render_video(loaded.animator, loaded.person, drv, out, detector=loaded.detector,
                              relative=relative, smooth=smooth, side_by_side=side_by_side, paste=paste,
                              batch_size=batch_size, compile=compile, driver_track=track, reporter=reporter)
    finally:
        if track is not None:
            track.cancel()
    result.timings["person"] = t_person  # model load, the source's landmarks and embedding, fine-tuning
    return result


def fine_tune(sources: PathLike | Sequence[PathLike], out: PathLike, *, checkpoint: PathLike | None = None,
              steps: int | None = None, frames: int = 32, device: str | None = None, detector: str | None = None,
              seed: int = 0, pm=None, reporter: "Reporter | None" = None) -> "Person":
    """Fine-tune a meta-learned model on frames of one new person; write a person folder
    (``headpuppet fine-tune``, Zakharov et al. 2019, section 3.4).

    The embedder gives ``e_new`` from the T frames; ``psi'`` starts at ``P e_new`` and ``w'`` at
    ``w0 + e_new``; G and D are trained on the T frames with ``L_CNT + L_ADV``
    (:func:`headpuppet.fewshot.finetune.fine_tune_person`). :func:`animate` takes the folder as its source.

    Args:
        sources: photos, a folder of photos, or a video of the new person.
        out: the person folder to write (new, empty, or an earlier person folder to replace);
            previews go to ``out/previews``.
        checkpoint: run or checkpoint folder from ``headpuppet meta-train`` (it needs its
            discriminator); None: the default model in ``weights/demo``.
        steps: fine-tuning steps; None: ``finetune.steps`` of the checkpoint's config.
        frames: frames sampled when a source is a video (T).
        device: as for :func:`load_model`.
        detector: landmark detector plugin; None: the one the model was trained with.
        seed: seeds the batch order and the networks' randomness.
        pm: a plugin manager; None makes the default one.
        reporter: progress and warnings; None: silent.

    Returns:
        the fine-tuned :class:`~headpuppet.fewshot.person.Person` (with its own G and D), as written to ``out``.

    Raises:
        MediaError, NoFaceError, CheckpointError, DeviceError: one-line messages saying what to do.
    """
    from ..training.checkpoint import resolve  # lazy: torch, +1.4 s on `headpuppet --help` (measured)
    from .animator import Animator, resolve_checkpoint  # lazy: torch, +1.4 s on `headpuppet --help` (measured)
    from .finetune import fine_tune_person
    from .person import is_person_dir
    from .sources import load_source_images

    tune_allocator()
    out, sources = Path(out), _as_list(sources)
    if out.exists() and not out.is_dir():
        raise MediaError(f"{out} is a file; --out must be a folder to write the person into")
    checkpoint = resolve_checkpoint(None) if checkpoint is None else Path(checkpoint)
    if not checkpoint.exists():
        raise CheckpointError(f"no checkpoint at {checkpoint}; pass a run or checkpoint folder")
    inputs = [("checkpoint", checkpoint)] + [("source", s) for s in sources]
    try:
        inputs.append(("checkpoint", resolve(checkpoint)))  # the step folder a run folder names
    except CheckpointError:
        pass  # not a checkpoint: loading it below says so
    check_not_input(out, inputs, "--out")
    if out.is_dir() and any(out.iterdir()) and not is_person_dir(out):
        raise MediaError(f"--out {out} is a folder that holds other files and is not a person folder; "
                         "give a new folder (or an earlier person folder to replace)")
    check_writable_dir(out, "--out")
    device = str(resolve_device(device))
    src = load_source_images(sources, k=frames)           # unreadable photos fail before the model loads
    animator = Animator.from_checkpoint(checkpoint, device=device, pm=pm)
    det = animator.make_detector(detector)
    person = animator.prepare_source(src.images, detector=det, labels=src.labels, reporter=reporter)
    tuned = fine_tune_person(animator, person, steps, reporter=reporter, preview_dir=out / "previews", seed=seed)
    animator.save_person(tuned, out)
    return tuned


# ---------------------------------------------------------------------- output checks
def default_output(sources: Sequence[PathLike], driver: PathLike) -> Path:
    """``<source-stem>_<driver-stem>.mp4`` in the current folder."""
    first = Path(sources[0])
    src = first.name if first.is_dir() else first.stem
    drv = Path(driver)
    return Path(f"{src}_{drv.name if drv.is_dir() else drv.stem}.mp4")


def check_writable(path: Path) -> None:
    """Fail now, before any work, when the output video ``path`` cannot be written."""
    from ..media.imaging import is_video  # lazy: PIL (CLI start-up)

    if path.is_dir():
        raise MediaError(f"{path} is a folder; give -o a file name such as out.mp4")
    if not is_video(path):
        raise MediaError(f"{path}: the output must be a video file name (.mp4, .mov, .mkv, ...)")
    check_writable_file(path, "-o")


def _as_list(paths: PathLike | Sequence[PathLike]) -> list[str]:
    """One path or several -> a list of strings (a single str is one path, not its characters)."""
    if isinstance(paths, (str, Path)):
        return [str(paths)]
    return [str(p) for p in paths]

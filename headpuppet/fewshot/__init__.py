"""The few-shot stage: a trained model meets a new person (Zakharov et al. 2019, sections 3.3, 3.4, 4).

In: photos, a video or a person folder of the SOURCE person, a DRIVER video (or folder of frames),
and a checkpoint from ``meta-train`` (default: ``weights/demo``).
Out: a :class:`~headpuppet.fewshot.person.Person` (K shots embedded once, ``psi = P e`` cached),
fine-tuned parameters written as a person folder, and rendered frames written as a video.

    sources.py      SOURCE photos/video -> images; DRIVER -> a re-readable frame stream
    person.py       the Person, and the person folder that stores a fine-tuned one
    animator.py     Animator: load a checkpoint, embed a person, render frames (the fast inference path)
    finetune.py     few-shot fine-tuning of G and D on the person's shots (section 3.4)
    retarget.py     driver landmarks: bridge gaps, smooth, move the source's own face by the driver's motion
    compositing.py  paste the rendered face back into the full photo
    pipeline.py     render_video: the two-pass render loop, driver in, video out
    session.py      load_person: model + person + detector for a SOURCE, as every front end loads them
    api.py          animate(), fine_tune(), load_model(): the Python API, re-exported by ``headpuppet``

Imports run one way (api -> pipeline/session -> animator -> finetune -> person), with no cycle.
Importing this package imports none of them (nor torch).
"""

"""Worker processes for ``headpuppet preprocess --workers N``: each rebuilds the plugin that provides
the detector and loads its own detector, then runs :func:`headpuppet.data.extract.run_one` per item.

Processes are spawned, not forked: mediapipe (and torch) hold threads and native state that a fork
would copy broken. Plugins travel by module name (re-imported, or loaded from their file, as
``--plugins-dir`` plugins are) or, for plugin objects, by pickling.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import multiprocessing as mp
import os
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..nativelog import FILTER_ENV, stderr_to_devnull
from ..plugins import make_plugin_manager, registry
from .discover import Item
from .extract import ExtractConfig, VideoResult, failure_result, run_one

log = logging.getLogger(__name__)

__all__ = ["run_pool"]

_WORKER: dict[str, Any] = {}


def _plugin_spec(pm) -> list[tuple[str, str | None, str | None, Any]]:
    """How a worker process can rebuild the plugins of ``pm``.

    One ``(name, module name, module file, object)`` per plugin: modules travel by name (re-imported,
    or loaded from their file, as ``--plugins-dir`` plugins are), other plugin objects by pickling.
    """
    spec = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        if isinstance(plugin, type(sys)):
            spec.append((name, plugin.__name__, getattr(plugin, "__file__", None), None))
        else:
            try:
                pickle.dumps(plugin)
            except Exception:  # noqa: BLE001 - such a plugin cannot reach the workers
                log.warning("plugin %s cannot be sent to worker processes; workers run without it", name)
                continue
            spec.append((name, None, None, plugin))
    return spec


def _native_stderr_to_devnull() -> None:
    """In a worker process: what native code writes to file descriptor 2 goes to /dev/null, while
    Python's ``sys.stderr`` keeps the real stream. MediaPipe's graph threads log asynchronously
    ("Feedback manager requires...") after any scoped mute has ended. ``-vv``
    (``HEADPUPPET_NATIVE_LOGS=1``, inherited from the parent) keeps them; so does a parent whose fd 2
    already runs through the command line's filter (:mod:`headpuppet.nativelog`), which drops the log
    lines but lets a crash's own output through."""
    if os.environ.get("HEADPUPPET_NATIVE_LOGS") or os.environ.get(FILTER_ENV):
        return
    real = stderr_to_devnull()
    if real is not None:  # None: no usable stderr, nothing to keep quiet
        sys.stderr = os.fdopen(real, "w", buffering=1)


def _worker_init(spec, detector: str, cfg: ExtractConfig, blocked: str | None) -> None:
    _native_stderr_to_devnull()
    if blocked is not None:
        os.environ["HEADPUPPET_DISABLE_PLUGINS"] = blocked
    pm = make_plugin_manager(load_entrypoints=False)
    for name, modname, file, obj in spec:
        if pm.has_plugin(name):
            continue
        if obj is not None:
            pm.register(obj, name=name)
            continue
        try:
            module = importlib.import_module(modname)
        except ImportError:
            if file is None:
                raise
            s = importlib.util.spec_from_file_location(modname, file)
            module = importlib.util.module_from_spec(s)
            sys.modules[modname] = module
            s.loader.exec_module(module)
        pm.register(module, name=name)
    _WORKER["detector"] = registry(pm, "landmarks").create(detector)
    _WORKER["cfg"] = cfg


def _worker_run(item: Item) -> VideoResult:
    return run_one(item, _WORKER["detector"], _WORKER["cfg"])


def run_pool(todo: list[Item], pm, detector: str, cfg: ExtractConfig, workers: int, record) -> None:
    """Process ``todo`` in ``workers`` spawned processes; ``record(VideoResult)`` is called in this
    process as each item finishes (a worker that dies becomes a failed result, not an exception)."""
    # spawn: mediapipe (and torch) hold threads and native state that a fork would copy broken
    ctx = mp.get_context("spawn")
    # only the plugin that provides the detector: importing every plugin (torch for the losses...)
    # would cost each worker seconds of start-up for nothing
    owner = registry(pm, "landmarks")[detector].plugin
    spec = [s for s in _plugin_spec(pm) if s[0] == owner]
    blocked = os.environ.get("HEADPUPPET_DISABLE_PLUGINS")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(spec, detector, cfg, blocked)) as pool:
        futures = {pool.submit(_worker_run, it): it for it in todo}
        try:
            for fut in as_completed(futures):
                it = futures[fut]
                try:
                    record(fut.result())
                except BrokenProcessPool as exc:
                    record(failure_result(it, RuntimeError(f"worker process died ({exc})")))
                except Exception as exc:  # noqa: BLE001
                    record(failure_result(it, exc))
        except KeyboardInterrupt:
            # the workers got the same Ctrl-C; do not wait for queued videos
            pool.shutdown(wait=False, cancel_futures=True)
            raise

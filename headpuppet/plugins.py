"""Plugin manager and component registries.

``make_plugin_manager()`` builds a fresh :class:`pluggy.PluginManager` (no module-level global):
hookspecs, then every entry point of the group ``headpuppet`` (the first-party plugins are
registered there exactly as a third party's are), then any ``*.py`` files of ``plugins_dir``.
``HEADPUPPET_DISABLE_PLUGINS=a,b`` blocks plugins by entry-point name or distribution name. A
plugin that fails to import or register is reported once (``manager.failures``) and skipped.

``registry(pm, kind)`` collects one kind of component into a :class:`Registry` that remembers which
plugin registered each name. On a duplicate name the project's own plugin wins: the other
plugin's component is skipped, said once in one line naming it (``manager.failures``). Two
third-party plugins claiming one name both lose it: using that name fails, naming both; everything
else keeps working.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

import pluggy

from . import hookspecs
from .errors import PluginError

log = logging.getLogger(__name__)

GROUP = "headpuppet"
DISABLE_ENV = "HEADPUPPET_DISABLE_PLUGINS"
#: a folder whose ``*.py`` files the commands load as plugins too (``--plugins-dir`` sets it)
PLUGINS_DIR_ENV = "HEADPUPPET_PLUGINS_DIR"
#: distributions whose plugins are the project's own (their names win a clash)
FIRST_PARTY = {"headpuppet", "headpuppet-dlib-detector"}
#: the landmark detector of models that do not name theirs, and of ``animate`` before it loads one
DEFAULT_DETECTOR = "mediapipe"


def is_first_party(distribution: str | None) -> bool:
    return distribution is not None and distribution.lower().replace("_", "-") in FIRST_PARTY

#: hook name for each registry kind (``headpuppet plugins`` shows the kind)
HOOKS = {
    "landmarks": "register_landmark_detectors",
    "perceptual": "register_perceptual_losses",
    "discriminator": "register_discriminators",
    "metric": "register_metrics",
    "weights": "register_weights",
}


@dataclass
class PluginInfo:
    name: str
    distribution: str | None = None
    version: str | None = None


@dataclass
class Entry:
    """One registered component; ``meta`` holds the extra keywords its plugin gave ``register``
    (a metric's ``label``, ``higher_is_better``, ``decimals``)."""

    name: str
    kind: str
    factory: Any
    plugin: str
    distribution: str | None
    version: str | None
    unavailable: str | None = None
    meta: dict = field(default_factory=dict)

    def create(self, *args, **kwargs):
        if self.unavailable:
            raise PluginError(f"{self.kind} '{self.name}' is unavailable: {self.unavailable}")
        return self.factory(*args, **kwargs)

    @property
    def first_party(self) -> bool:
        return is_first_party(self.distribution)


class Registry:
    """Name -> :class:`Entry` for one kind of component.

    Args:
        kind: the registry kind (``landmarks``, ...).
        on_clash: ``(plugin, reason)`` called once for a component skipped because its name is taken.
    """

    def __init__(self, kind: str, on_clash: Callable[[str, str], None] | None = None):
        self.kind = kind
        self.entries: dict[str, Entry] = {}
        self.on_clash = on_clash or (lambda plugin, reason: log.warning("plugin %s %s", plugin, reason))

    def add(self, entry: Entry) -> None:
        old = self.entries.get(entry.name)
        if old is None:
            self.entries[entry.name] = entry
            return
        if old.first_party != entry.first_party:  # the project's own name wins
            own, other = (old, entry) if old.first_party else (entry, old)
            self.entries[entry.name] = own
            self.on_clash(other.plugin, f"registers {self.kind} '{entry.name}', a name of headpuppet's own "
                                        f"plugin '{own.plugin}'; its '{entry.name}' was skipped (rename it in "
                                        f"'{other.plugin}' or block it with {DISABLE_ENV}={other.plugin})")
            return
        plugins = f"'{old.plugin}' and '{entry.plugin}'"
        reason = (f"{self.kind} name '{entry.name}' is registered by two plugins, {plugins}; uninstall one "
                  f"or block it with {DISABLE_ENV}={entry.plugin}")
        self.entries[entry.name] = Entry(entry.name, self.kind, None, f"{old.plugin}, {entry.plugin}", None,
                                         None, unavailable=reason)
        self.on_clash(entry.plugin, f"clashes with '{old.plugin}': both register {self.kind} '{entry.name}', "
                                    f"so neither is used; block one with {DISABLE_ENV}")

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __getitem__(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise PluginError(f"unknown {self.kind} '{name}'; available: {known} (see `headpuppet plugins`)") from None

    def get(self, name: str) -> Any:
        """The factory registered as ``name``; a clear error when unknown or unavailable."""
        entry = self[name]
        if entry.unavailable:
            raise PluginError(f"{self.kind} '{name}' is unavailable: {entry.unavailable}")
        return entry.factory

    def create(self, name: str, *args, **kwargs):
        return self[name].create(*args, **kwargs)


def _blocked() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {p.strip() for p in raw.split(",") if p.strip()}


def make_plugin_manager(load_entrypoints: bool = True, plugins_dir: str | Path | None = None,
                        extra_plugins: list[tuple[str, Any]] | None = None) -> pluggy.PluginManager:
    """A new plugin manager with the hookspecs and the plugins found.

    Args:
        load_entrypoints: load every entry point of the group ``headpuppet`` (first- and third-party).
        plugins_dir: a folder whose ``*.py`` files are loaded as plugins (name = file stem).
        extra_plugins: ``(name, module_or_object)`` pairs registered directly (tests use this).

    The manager carries ``pm.failures: list[(plugin, reason)]`` and ``pm.info: dict[name, PluginInfo]``.
    """
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    pm.failures = []  # type: ignore[attr-defined]
    pm.info = {}  # type: ignore[attr-defined]
    blocked = _blocked()
    for name in blocked:
        pm.set_blocked(name)

    if load_entrypoints:
        def _dist(e):
            return e.dist.name if e.dist is not None else None

        # the project's own plugins first: a third party's entry point of the same name cannot shadow them
        for ep in sorted(entry_points(group=GROUP), key=lambda e: (not is_first_party(_dist(e)), e.name)):
            dist = _dist(ep)
            if ep.name in blocked or (dist and dist in blocked) or pm.is_blocked(ep.name):
                continue
            if pm.has_plugin(ep.name):
                first = pm.info.get(ep.name)
                if first is not None and first.distribution != dist:
                    _fail(pm, ep.name, f"of {dist or 'an unknown distribution'} has the name of the plugin "
                                       f"'{ep.name}' of {first.distribution}; rename its entry point")
                continue  # else the same distribution seen twice on sys.path
            try:
                module = ep.load()
                pm.register(module, name=ep.name)
            except Exception as exc:  # a broken plugin must never take the CLI down
                _fail(pm, ep.name, f"failed to load ({type(exc).__name__}: {exc})")
                continue
            pm.info[ep.name] = PluginInfo(ep.name, dist, ep.dist.version if ep.dist is not None else None)

    if plugins_dir is not None:
        for path in sorted(Path(plugins_dir).glob("*.py")):
            name = path.stem
            if name in blocked or pm.has_plugin(name):
                continue
            try:
                spec = importlib.util.spec_from_file_location(f"headpuppet_dir_plugin_{name}", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module
                spec.loader.exec_module(module)
                pm.register(module, name=name)
            except Exception as exc:
                _fail(pm, name, f"failed to load from {path} ({type(exc).__name__}: {exc})")
                continue
            pm.info[name] = PluginInfo(name, None, None)

    for name, obj in extra_plugins or []:
        if name in blocked:
            continue
        pm.register(obj, name=name)
        pm.info[name] = PluginInfo(name, None, None)
    return pm


def env_plugin_manager() -> pluggy.PluginManager:
    """The commands' plugin manager: the installed plugins and those of :data:`PLUGINS_DIR_ENV`'s
    folder (the CLI, and the landmark helper process it starts, which must see the same detectors)."""
    return make_plugin_manager(plugins_dir=os.environ.get(PLUGINS_DIR_ENV) or None)


def _fail(pm: pluggy.PluginManager, name: str, reason: str, skipped: bool = True) -> None:
    pm.failures.append((name, reason))
    log.warning("plugin %s %s%s", name, reason, "; skipped" if skipped else "")


def _plugin_info(pm: pluggy.PluginManager, plugin_name: str) -> PluginInfo:
    return pm.info.get(plugin_name) or PluginInfo(plugin_name)


def registry(pm: pluggy.PluginManager, kind: str) -> Registry:
    """Collect the components of one kind from every plugin (cached on the manager)."""
    cache = pm.__dict__.setdefault("_hp_registries", {})
    if kind in cache:
        return cache[kind]
    if kind not in HOOKS:
        raise ValueError(f"unknown registry kind {kind!r}; one of {sorted(HOOKS)}")
    reg = Registry(kind, on_clash=lambda plugin, reason: _fail(pm, plugin, reason, skipped=False))
    hook = getattr(pm.hook, HOOKS[kind])
    for impl in hook.get_hookimpls():
        info = _plugin_info(pm, impl.plugin_name)
        if kind == "weights":
            def register(spec, _info=info):
                reg.add(Entry(spec.name, kind, spec, _info.name, _info.distribution, _info.version))
        else:
            def register(name: str, factory: Callable, unavailable: str | None = None, *, _info=info, **meta):
                reg.add(Entry(name, kind, factory, _info.name, _info.distribution, _info.version, unavailable,
                              meta))
        try:
            impl.function(register=register)
        except PluginError:
            raise
        except Exception as exc:
            _fail(pm, impl.plugin_name, f"failed to register {kind} ({type(exc).__name__}: {exc})")
    cache[kind] = reg
    return reg


def register_commands(pm: pluggy.PluginManager, app) -> list[Entry]:
    """Let every plugin add commands to ``app``; returns one entry per added command."""
    added: list[Entry] = []
    for impl in pm.hook.register_commands.get_hookimpls():
        info = _plugin_info(pm, impl.plugin_name)
        before = len(app.registered_commands), len(app.registered_groups)
        try:
            impl.function(app=app)
        except Exception as exc:
            _fail(pm, impl.plugin_name, f"failed to register commands ({type(exc).__name__}: {exc})")
            del app.registered_commands[before[0]:]
            del app.registered_groups[before[1]:]
            continue
        for cmd in app.registered_commands[before[0]:]:
            name = cmd.name or (cmd.callback.__name__.replace("_", "-") if cmd.callback else "?")
            added.append(Entry(name, "command", cmd, info.name, info.distribution, info.version))
        for grp in app.registered_groups[before[1]:]:
            added.append(Entry(grp.name or "?", "command", grp, info.name, info.distribution, info.version))
    return added


def list_components(pm: pluggy.PluginManager, app=None, commands: list[Entry] | None = None) -> list[dict]:
    """Every registered component as a dict (what ``headpuppet plugins --json`` prints)."""
    rows: list[dict] = []
    kind_names = {"landmarks": "landmarks", "perceptual": "perceptual", "discriminator": "discriminator",
                  "metric": "metric", "weights": "weights"}
    for kind in HOOKS:
        for entry in registry(pm, kind).entries.values():
            rows.append(_row(entry, kind_names[kind]))
    for entry in commands or []:
        rows.append(_row(entry, "command"))
    return rows


def _row(entry: Entry, kind: str) -> dict:
    return {
        "name": entry.name,
        "kind": kind,
        "plugin": entry.plugin,
        "distribution": entry.distribution,
        "version": entry.version,
        "available": entry.unavailable is None,
        "unavailable": entry.unavailable,
    }

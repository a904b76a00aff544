"""The plugin manager: loads plugins, calls hooks safely, keeps the registries.

Plugins come from three places, in this order: the bundled modules listed in
``plugins.BUNDLED``, installed distributions under the ``xiajiao`` entry-point
group, and ``*.py`` files in the folder named by ``XIAJIAO_PLUGINS_DIR``.
"""
from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pluggy

from . import hookspecs
from .errors import PluginError

log = logging.getLogger("xiajiao.plugins")
hookimpl = pluggy.HookimplMarker("xiajiao")

_NAME = re.compile(r"^[a-z][a-z0-9_\-.]{0,63}$")


@dataclass
class Registration:
    name: str
    item: Any
    plugin: str


class Registry:
    """Named things one kind of ``register_*`` hook contributes; duplicates are refused."""

    def __init__(self, kind: str, name_of: Callable[[Any], str], validate: Callable[[Any], None] | None = None,
                 build: Callable[..., Any] | None = None):
        self.kind = kind
        self.name_of = name_of
        self.validate = validate
        self.build = build  # turns register(*args, **kw) into the stored item
        self.entries: dict[str, Registration] = {}

    def add(self, item: Any, plugin: str) -> None:
        if self.validate:
            try:
                self.validate(item)
            except (TypeError, ValueError) as exc:
                raise PluginError(f"plugin {plugin!r} registered an invalid {self.kind}: {exc}") from None
        name = self.name_of(item)
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.kind} without a name")
        if name in self.entries:
            other = self.entries[name].plugin
            raise PluginError(f"{self.kind} {name!r} is registered twice: by {other!r} and by {plugin!r}")
        self.entries[name] = Registration(name, item, plugin)

    def remove(self, name: str) -> None:
        """Forget a thing registered at run time (tools a plugin defines from data)."""
        self.entries.pop(name, None)

    def get(self, name: str) -> Any:
        reg = self.entries.get(name)
        return reg.item if reg else None

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def __iter__(self):
        return iter(r.item for r in self.entries.values())

    def names(self) -> list[str]:
        return list(self.entries)

    def by_plugin(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for r in self.entries.values():
            out.setdefault(r.plugin, []).append(r.name)
        return out


@dataclass
class PluginInfo:
    name: str
    version: str | None
    source: str  # bundled | entrypoint | file | test
    module: Any


@dataclass
class Plugins:
    """pluggy's manager plus what we know about each plugin."""

    pm: pluggy.PluginManager
    info: dict[str, PluginInfo] = field(default_factory=dict)
    trace: bool = False

    # -- loading

    def register(self, module: Any, name: str | None = None, *, source: str = "test",
                 version: str | None = None) -> str:
        name = name or getattr(module, "__name__", None) or repr(module)
        try:
            self.pm.register(module, name=name)
        except ValueError as exc:
            raise PluginError(f"plugin {name!r} cannot be registered: {exc}") from exc
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r} is invalid: {exc}") from exc
        self.info[name] = PluginInfo(name, version or getattr(module, "__version__", None), source, module)
        return name

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.info.pop(name, None)

    def describe(self, registries: dict[str, Registry] | None = None) -> list[dict]:
        contributions: dict[str, dict[str, list[str]]] = {}
        for kind, reg in (registries or {}).items():
            for plugin, names in reg.by_plugin().items():
                contributions.setdefault(plugin, {})[kind] = sorted(names)
        out = []
        for name, info in self.info.items():
            module = info.module
            hooks = sorted(
                h.name for h in self.pm.get_hookcallers(module) or []
            )
            out.append({"name": name, "version": info.version, "source": info.source, "hooks": hooks,
                        "registered": contributions.get(name, {})})
        return out

    # -- calling

    def _impls(self, hook_name: str):
        caller = getattr(self.pm.hook, hook_name)
        # pluggy calls the last-registered (and tryfirst) implementations first
        return list(reversed(caller.get_hookimpls()))

    async def call(self, hook_name: str, *, firstresult: bool | None = None, on_error: Any = None,
                   **kwargs: Any) -> Any:
        """Call a hook, awaiting async implementations.

        A failing implementation is logged with its plugin's name and skipped, or, when
        ``on_error`` is given, counts as having answered ``on_error`` (a decision hook
        that raises denies). Returns the list of non-None results, or for a firstresult
        hook the first non-None one.
        """
        caller = getattr(self.pm.hook, hook_name)
        if firstresult is None:
            firstresult = bool(caller.spec and caller.spec.opts.get("firstresult"))
        results = []
        for impl in self._impls(hook_name):
            args = {a: kwargs[a] for a in impl.argnames if a in kwargs}
            started = time.perf_counter()
            try:
                res = impl.function(**args)
                if inspect.isawaitable(res):
                    res = await res
            except asyncio.CancelledError:
                raise
            except Exception:  # a plugin's bug must not break the caller; it is logged by name
                log.exception("plugin %s failed in hook %s", impl.plugin_name, hook_name,
                              extra={"plugin": impl.plugin_name, "hook": hook_name})
                if on_error is None:
                    continue
                res = on_error
            finally:
                if self.trace:
                    log.info("hook", extra={"plugin": impl.plugin_name, "hook": hook_name,
                                            "ms": round((time.perf_counter() - started) * 1000, 3)})
            if res is not None:
                if firstresult:
                    return res
                results.append(res)
        return None if firstresult else results

    def call_sync(self, hook_name: str, **kwargs: Any) -> list[Any]:
        """Call a hook whose implementations must be synchronous (e.g. prepare_connection)."""
        results = []
        for impl in self._impls(hook_name):
            args = {a: kwargs[a] for a in impl.argnames if a in kwargs}
            try:
                res = impl.function(**args)
            except Exception:  # isolated like in call()
                log.exception("plugin %s failed in hook %s", impl.plugin_name, hook_name)
                continue
            if inspect.isawaitable(res):
                res.close()  # type: ignore[attr-defined]  # an async def implementation: a coroutine
                log.error("plugin %s: hook %s must not be async", impl.plugin_name, hook_name)
                continue
            if res is not None:
                results.append(res)
        return results

    @staticmethod
    def _register_callback(registry: Registry, plugin: str) -> Callable[..., None]:
        def register(*args: Any, **kw: Any) -> None:
            if registry.build:
                try:
                    item = registry.build(*args, **kw)
                except TypeError as exc:
                    raise PluginError(f"plugin {plugin!r}: bad register() call for a {registry.kind}: {exc}") from None
            elif len(args) == 1 and not kw:
                item = args[0]
            else:
                raise PluginError(f"plugin {plugin!r}: register() takes one {registry.kind}")
            registry.add(item, plugin)

        return register

    def collect_sync(self, hook_name: str, registry: Registry) -> None:
        """Like :meth:`collect`, at import time: ``register_*`` implementations must be synchronous."""
        for impl in self._impls(hook_name):
            plugin = impl.plugin_name
            register = self._register_callback(registry, plugin)
            try:
                res = impl.function(register=register) if "register" in impl.argnames else impl.function()
            except PluginError:
                raise
            except Exception as exc:  # a broken registration stops start-up, naming the plugin
                raise PluginError(f"plugin {plugin!r} failed in {hook_name}: {exc!r}") from exc
            if inspect.isawaitable(res):
                res.close()  # type: ignore[attr-defined]  # an async def implementation: a coroutine
                raise PluginError(f"plugin {plugin!r}: {hook_name} must be a plain (not async) function")


def new_manager(trace: bool = False) -> Plugins:
    pm = pluggy.PluginManager("xiajiao")
    pm.add_hookspecs(hookspecs)
    return Plugins(pm, trace=trace)


def _import(modname: str):
    try:
        return importlib.import_module(modname)
    except Exception as exc:
        raise PluginError(f"plugin {modname!r} failed to import: {exc!r}") from exc


def load_bundled(plugins: Plugins, version: str) -> None:
    from plugins import BUNDLED  # the repository's plugins/ package

    for modname in BUNDLED:
        plugins.register(_import(modname), modname, source="bundled", version=version)


def load_entrypoints(plugins: Plugins) -> None:
    for ep in importlib.metadata.entry_points(group="xiajiao"):
        try:
            module = ep.load()
        except Exception as exc:
            raise PluginError(f"plugin {ep.name!r} (entry point {ep.value}) failed to import: {exc!r}") from exc
        dist = getattr(ep, "dist", None)
        plugins.register(module, ep.name, source="entrypoint", version=dist.version if dist else None)


def load_directory(plugins: Plugins, folder: str | Path) -> None:
    folder = Path(folder)
    if not folder.is_dir():
        raise PluginError(f"XIAJIAO_PLUGINS_DIR={str(folder)!r} is not a folder; fix or unset it.")
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        modname = f"xiajiao_plugin_{path.stem}"
        spec = importlib.util.spec_from_file_location(modname, path)
        if spec is None or spec.loader is None:
            raise PluginError(f"{path} cannot be loaded as a Python module.")
        module = importlib.util.module_from_spec(spec)
        try:
            sys.modules[modname] = module
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(modname, None)
            raise PluginError(f"plugin file {path} failed to import: {exc!r}") from exc
        plugins.register(module, path.stem, source="file")

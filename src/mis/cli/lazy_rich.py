"""Defer two heavy rich modules that Typer imports eagerly but `mis` rarely uses.

`typer.rich_utils` imports `rich.markdown` (which pulls in markdown-it) and `rich.traceback`
(pygments) at module level, about half of the CLI's start-up time, although we render help with
Rich markup (never Markdown) and disable pretty tracebacks. We register stand-in modules whose
classes load the real module on first use, so `mis --help` stays under 0.3 s and anything that
really uses them still gets the real thing.
"""
from __future__ import annotations

import importlib
import sys
import types

DEFERRED = {"rich.markdown": ("Markdown",), "rich.traceback": ("Traceback",)}


def _load_real(name: str) -> types.ModuleType:
    if isinstance(sys.modules.get(name), _DeferredModule):
        del sys.modules[name]
    return importlib.import_module(name)


def _stand_in(module: str, attribute: str) -> type:
    class StandIn:
        def __new__(cls, *args, **kwargs):
            return getattr(_load_real(module), attribute)(*args, **kwargs)

    StandIn.__name__ = StandIn.__qualname__ = attribute
    return StandIn


class _DeferredModule(types.ModuleType):
    def __init__(self, name: str, attributes: tuple[str, ...]):
        super().__init__(name)
        for attribute in attributes:
            setattr(self, attribute, _stand_in(name, attribute))

    def __getattr__(self, attribute: str):  # anything else: the real module
        if attribute.startswith("__"):
            # the import system probes dunders such as __path__ during `from rich.markdown import Markdown`;
            # loading the real module for that probe would defeat the deferral
            raise AttributeError(attribute)
        return getattr(_load_real(self.__name__), attribute)


def install() -> None:
    for name, attributes in DEFERRED.items():
        if name not in sys.modules:
            sys.modules[name] = _DeferredModule(name, attributes)

"""Thin Quart blueprints: parse, authorize, call the core, shape the reply.

Every module of this package that defines ``bp`` is registered, in name order.
"""
from __future__ import annotations

import importlib
import pkgutil

from quart import Quart


def register_blueprints(app: Quart) -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        bp = getattr(module, "bp", None)
        if bp is not None:
            app.register_blueprint(bp)

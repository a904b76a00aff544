"""Thin Quart blueprints: parse, authorize, call the core, shape the reply."""
from __future__ import annotations

from quart import Quart


def register_blueprints(app: Quart) -> None:
    from . import auth, system

    for module in (system, auth):
        app.register_blueprint(module.bp)

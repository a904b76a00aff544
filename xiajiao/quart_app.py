"""The Quart app as the core's code sees it: ``app.xj`` is the core object (``xiajiao.app.Xiajiao``).

Routes import ``current_app`` from here rather than from quart, so that ``current_app.xj`` is typed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, cast

from quart import Quart
from quart import current_app as _current_app

if TYPE_CHECKING:
    from .app import Xiajiao


class XiajiaoApp(Quart):
    """A Quart app carrying the core as ``xj`` (built by ``xiajiao.app.create_app``)."""

    xj: Xiajiao


current_app = cast(XiajiaoApp, _current_app)

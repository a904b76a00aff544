"""The Quart app as the core's code sees it: ``app.xj`` is the core object (``xiajiao.app.Xiajiao``).

Routes import ``current_app`` from here rather than from quart, so that ``current_app.xj`` is typed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, cast

from quart import Quart
from quart import current_app as _current_app
from quart.routing import QuartRule

if TYPE_CHECKING:
    from .app import Xiajiao


class LazyBuildRule(QuartRule):
    """A route whose URL builder is compiled the first time a URL is built from it.

    Werkzeug compiles two Python functions per route as the route is added, for ``url_for``; with
    the app's 136 routes that was ≈ 0.1 s of every start, for URLs the app never builds.
    tests/test_library_boundaries.py fails if Werkzeug's builder changes shape.
    """

    def _compile_builder(self, append_unknown: bool = True) -> Callable[..., tuple[str, str]]:
        compiled: Callable[..., tuple[str, str]] | None = None

        def build(rule: Any, **values: Any) -> tuple[str, str]:
            nonlocal compiled
            if compiled is None:
                compiled = QuartRule._compile_builder(rule, append_unknown)  # noqa: SLF001
            return compiled(rule, **values)

        return build


class XiajiaoApp(Quart):
    """A Quart app carrying the core as ``xj`` (built by ``xiajiao.app.create_app``)."""

    xj: Xiajiao
    url_rule_class = LazyBuildRule


current_app = cast(XiajiaoApp, _current_app)

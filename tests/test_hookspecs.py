"""Every hook is documented (heading = exact signature) and exercised by a test."""
from __future__ import annotations

import inspect
import re

from conftest import ROOT
from xiajiao import hookspecs


def hooks():
    return {name: fn for name, fn in vars(hookspecs).items()
            if inspect.isfunction(fn) and hasattr(fn, "xiajiao_spec")}


def test_every_hook_has_a_one_line_docstring():
    bad = [n for n, fn in hooks().items() if not fn.__doc__ or "\n" in fn.__doc__.strip()]
    assert bad == []


def test_every_hook_is_documented_with_its_exact_signature():
    doc = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^### `(.+)`$", doc, re.M))
    missing = [f"{n}{inspect.signature(fn)}" for n, fn in hooks().items()
               if f"{n}{inspect.signature(fn)}".replace("'", "") not in headings]
    assert missing == []
    extra = [h for h in headings if h.split("(")[0] not in hooks()]
    assert extra == []


def test_every_hook_has_a_test():
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py")
                        if p.name != "test_hookspecs.py")
    untested = [n for n in hooks() if not re.search(rf"def {n}\(", sources)]
    assert untested == []

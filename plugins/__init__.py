"""The plugins bundled with Xiajiao. Each is an ordinary pluggy plugin module (or
package) that talks to the core only through hooks and the public facade ``xiajiao``.

Every module and package in this folder whose name does not start with ``_`` is
loaded at start, in name order.
"""
from __future__ import annotations

import pkgutil

BUNDLED: list[str] = [f"{__name__}.{m.name}" for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name)
                      if not m.name.startswith("_")]

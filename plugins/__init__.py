"""The plugins bundled with Xiajiao. Each is an ordinary pluggy plugin module that
talks to the core only through hooks and the public facade ``xiajiao``.

``BUNDLED`` lists the modules loaded at start, in order.
"""

BUNDLED: list[str] = [
]

"""The conversation engine: routing, agent turns, the tool loop, chains."""
from __future__ import annotations


class Engine:
    def __init__(self, app):
        self.app = app

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def handle_user_message(self, message: dict, channel: dict, actor) -> None:
        pass

"""One module per benchmark section; each exposes ``async def run(ctx) -> dict``."""

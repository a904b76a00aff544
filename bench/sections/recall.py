"""9. Memory recall quality: the project's long conversation of facts (bench/recall) written through
the memory API of the real server, then searched in other words and the other language."""
from __future__ import annotations

from ..harness import Server
from ..recall import evaluate


async def run(ctx) -> dict:
    o = ctx.opts
    out: dict = {"embedder": o.retrieval_embedder}
    for hints, name in ((True, "with_supersedes"), (False, "merge_only")):
        server = Server(ctx.tmp / "recall" / name, access_log=o.access_log,
                        env={"XIAJIAO_EMBEDDER": o.retrieval_embedder})
        async with server:
            await server.login()
            result = await evaluate(server, hints=hints, limit=o.retrieval_questions)
        if hints:
            out.update(result)  # the main figures: the agent names what it updates
        else:
            out["merge_only"] = {k: result[k] for k in ("statuses", "dev", "held-out")}
    return out

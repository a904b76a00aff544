"""8. Retrieval quality: the project's bilingual documents and questions (bench/retrieval),
asked through ``POST /api/rag/query`` of the real server with the default local embedder."""
from __future__ import annotations

from ..harness import Server
from ..retrieval import evaluate, render  # noqa: F401  (render: the runner prints this section with it)


async def run(ctx) -> dict:
    o = ctx.opts
    server = Server(ctx.tmp / "retrieval" / "data", access_log=o.access_log,
                    env={"XIAJIAO_EMBEDDER": o.retrieval_embedder})
    async with server:
        await server.login()
        return {"embedder": o.retrieval_embedder, **await evaluate(server, limit=o.retrieval_questions)}

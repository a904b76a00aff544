"""Agent knowledge: documents in the agent's own rag.db, found by hybrid retrieval.

- ``/api/rag/*``: upload (TXT, Markdown, HTML, PDF, DOCX through the registered parsers),
  background ingestion with ``rag_progress`` frames (percent and time left), resumed after a
  restart, list, status, delete, query;
- the ``rag_query`` tool;
- with the agent's knowledge switched on (agents.knowledge = 1), the best passages go
  into its system prompt with citation numbers (``prepare_prompt``, budget rag_prompt_chars),
  remembered per answered message so the reply's [n] markers open their passages
  (``/api/rag/citations/…``).
"""
from __future__ import annotations

from xiajiao import Setting, Tool, hookimpl

from . import store
from .api import bp


@hookimpl
def register_settings(register):
    register(Setting("chunk_size", 200, "Characters of a knowledge chunk used for matching.", int))
    register(Setting("parent_chunk_size", 800, "Characters of the parent passage given to the model as context.", int))
    register(Setting("rrf_k", 60, "The k of Reciprocal Rank Fusion for hybrid retrieval.", int))
    register(Setting("rerank", False, "Rerank retrieved passages with the agent's model.", bool))
    register(Setting("rag_prompt_chars", 3000, "Characters of knowledge passages injected into an agent's system "
                     "prompt.", int))
    register(Setting("rag_max_document_bytes", 10 * 1024 * 1024, "Largest knowledge document accepted for an agent, "
                     "in bytes.", int))
    register(Setting("rag_max_agent_bytes", 200 * 1024 * 1024, "Most bytes of knowledge documents one agent keeps.",
                     int))
    # retrieval levers, measured by bench/retrieval (docs/memory-and-knowledge.md)
    register(Setting("rag_heading_sections", True, "Cut knowledge documents at their Markdown headings before "
                     "cutting by size.", bool))
    register(Setting("rag_contextual_chunks", True, "Start every knowledge chunk's indexed text with its document "
                     "title and heading path.", bool))
    register(Setting("rag_fusion", "linear", "How hybrid retrieval fuses its halves: 'linear' (similarity plus "
                     "weighted relative BM25) or 'rrf' (reciprocal ranks, rrf_k)."))
    register(Setting("rag_vector_weight", 1.0, "Weight of the vector half in the fusion of hybrid retrieval.", float))
    register(Setting("rag_keyword_weight", 0.05, "Weight of the full-text (BM25) half in the fusion of hybrid "
                     "retrieval.", float))
    register(Setting("rag_cross_language_boost", 0.06, "Added to the cosine similarity of a chunk written in the "
                     "other script than the question (Chinese vs. Latin), which the embedder scores lower.", float))
    register(Setting("rag_vector_pool", 300, "Nearest chunks read per question before fusion (a wide pool lets the "
                     "other language's best chunks compete).", int))
    register(Setting("rag_min_relevance", -1.0, "Relevance (cosine after the cross-language boost) the best passage "
                     "needs for the knowledge base to count as having an answer (negative: the embedder's own "
                     "calibrated value, 0.43 for e5-small).", float))
    register(Setting("rag_query_rewrite", False, "Also search the question rewritten in English and Chinese by the "
                     "agent's model.", bool))


async def rag_query(args: dict, ctx) -> dict:
    top_k = args.get("topK", 5)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 20:
        top_k = 5
    results = await store.query(ctx.app, ctx.agent, args.get("query"), top_k)
    first = 1
    message_id = (ctx.message or {}).get("id")
    if results and isinstance(message_id, str) and message_id:
        # numbered after the prompt's passages, and remembered: the reply's [n] opens these too
        first = await store.record_citations(ctx.app, ctx.agent["id"], message_id, results, append=True)
    return {"results": [{"cite": n, **r} for n, r in enumerate(results, first)]}


@hookimpl
def register_tools(register):
    register(Tool(
        name="rag_query",
        description="Search your knowledge base (the documents uploaded to you) and get the best passages "
                    "with their document names; cite them as [n].",
        parameters={"type": "object", "properties": {
            "query": {"type": "string", "description": "What to look for, in any language"},
            "topK": {"type": "integer", "minimum": 1, "maximum": 20},
        }, "required": ["query"]},
        fn=rag_query))


@hookimpl
def register_routes(register):
    register(bp)


@hookimpl
def startup(app):
    # ingestions a stopped server left go on (in the background: the start does not wait for them)
    app.spawn(store.resume_all(app), name="rag-resume")


@hookimpl
async def prepare_prompt(app, prompt, agent, message):
    question = (message or {}).get("content") or ""
    budget = app.settings.rag_prompt_chars
    if not agent.get("knowledge") or not question.strip() or budget <= 0:
        return
    found = await store.search(app, agent, question[:store.MAX_QUERY_CHARS], 5)
    if not found["results"]:
        return  # no documents at all: nothing to say about them
    results = [r for r in found["results"] if r["relevance"] >= found["minRelevance"]]
    text = store.prompt_text(results, budget) if found["relevant"] else ""
    if text:
        prompt.add("Knowledge", "Passages from your knowledge base; cite them as [n] when you use them.\n\n" + text,
                   priority=55)
    else:
        prompt.add("Knowledge", NOTHING_FOUND, priority=55)
    message_id = (message or {}).get("id")
    if isinstance(message_id, str) and message_id:
        # the reply's [n] markers open these passages (none given: an earlier answer's numbers no longer hold)
        given = [r for n, r in enumerate(results, 1) if text.startswith(f"[{n}] ") or f"\n\n[{n}] " in text]
        app.spawn(store.record_citations(app, agent["id"], message_id, given), name=f"citations:{agent['id']}")


NOTHING_FOUND = ("Your knowledge base has nothing relevant to this message. If it asks about your documents, say "
                 "that they do not answer it; do not invent an answer and do not cite [n].")

"""The project's retrieval evaluation: bilingual documents (``docs/``), questions (``questions.py``),
run through the real server's ``POST /api/rag/query`` and scored per question kind.

A page hit: the expected document among the first k results. A passage hit: a result of
that document whose passage (the text given to the model) holds the evidence sentence.
Recall@k of a question is the share of its expected (document, evidence) pairs hit in the
first k (multi-hop questions have two); MRR uses the first rank of each pair (0 beyond 5).
Unanswerable questions are scored by whether the server says nothing relevant was found.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

from .questions import questions

DOCS = Path(__file__).resolve().parent / "docs"
KS = (1, 3, 5)
TOP_K = 5


def documents() -> list[tuple[str, str]]:
    """``(key, text)`` of every document, key like ``en/sync.md``."""
    return [(str(p.relative_to(DOCS)), p.read_text(encoding="utf-8")) for p in sorted(DOCS.rglob("*.md"))]


def ranks(results: list[dict], expected: list[tuple[str, str]], names: dict[str, str]) -> list[tuple[int, int]]:
    """For each expected pair, the first rank (1-based, 0 = not found) of its page and of its passage."""
    out = []
    for doc, evidence in expected:
        page = passage = 0
        for n, r in enumerate(results, 1):
            if names.get(r["documentName"]) != doc:
                continue
            page = page or n
            if evidence in r["text"]:
                passage = n
                break
        out.append((page, passage))
    return out


def score(rows: list[dict]) -> dict:
    """recall@1/3/5 and MRR of pages and passages over answerable rows; abstention over all."""
    answerable = [r for r in rows if r["expected"]]
    out: dict = {"n": len(rows)}
    if answerable:
        for what, i in (("page", 0), ("passage", 1)):
            for k in KS:
                out[f"{what}_r{k}"] = round(sum(sum(0 < rk[i] <= k for rk in r["ranks"]) / len(r["ranks"])
                                                for r in answerable) / len(answerable), 3)
            out[f"{what}_mrr"] = round(sum(sum(1 / rk[i] for rk in r["ranks"] if rk[i]) / len(r["ranks"])
                                           for r in answerable) / len(answerable), 3)
        out["false_abstain"] = round(sum(not r["relevant"] for r in answerable) / len(answerable), 3)
    unanswerable = [r for r in rows if not r["expected"]]
    if unanswerable:
        out["abstain"] = round(sum(not r["relevant"] for r in unanswerable) / len(unanswerable), 3)
    return out


def summarize(rows: list[dict]) -> dict:
    """Per split: per kind, and ``all`` (every answerable question, plus abstention)."""
    out: dict = {}
    for split in ("dev", "held-out"):
        part = [r for r in rows if r["split"] == split]
        kinds = dict.fromkeys(r["kind"] for r in part)
        out[split] = {kind: score([r for r in part if r["kind"] == kind]) for kind in kinds}
        out[split]["all"] = score(part)
    return out


async def upload_all(client, agent_id: str, poll: float = 0.05) -> dict[str, str]:
    """Upload every document, wait until all are indexed; returns {uploaded name: key}."""
    names, ids = {}, []
    for key, text in documents():
        name = key.split("/")[-1]
        names[name] = key
        r = await client.post("/api/rag/upload", data={"agentId": agent_id},
                              files={"file": (name, text.encode("utf-8"), "text/markdown")})
        r.raise_for_status()
        ids.append(r.json()["documentId"])
    for doc_id in ids:
        while True:
            d = (await client.get(f"/api/rag/documents/{doc_id}", params={"agentId": agent_id})).json()["document"]
            if d["status"] == "ready":
                break
            if d["status"] == "failed":
                raise RuntimeError(f"indexing failed: {d}")
            await asyncio.sleep(poll)
    return names


async def ask_all(client, agent_id: str, names: dict[str, str], limit: int = 0) -> list[dict]:
    rows = []
    for q in pick(limit) if limit else questions():
        r = await client.post("/api/rag/query", json={"agentId": agent_id, "query": q["query"], "topK": TOP_K})
        r.raise_for_status()
        body = r.json()
        rows.append({**q, "ranks": ranks(body["results"], q["expected"], names),
                     "relevant": body.get("relevant", bool(body["results"])),
                     "best": max((x.get("relevance", 0) for x in body["results"]), default=0),
                     "top": [names.get(x["documentName"], x["documentName"]) for x in body["results"]]})
    return rows


def pick(limit: int) -> list[dict]:
    """``limit`` questions spread over the kinds and both splits (smoke runs)."""
    qs = questions()
    step = max(1, len(qs) // limit)
    return qs[::step][:limit]


async def evaluate(server, *, limit: int = 0) -> dict:
    """Upload the documents to a fresh agent of a running ``Server`` and score every question.

    The agent holds the evaluation's documents and nothing else: the load profile's seeded
    knowledge base (``seed``) would be one more document competing for every question.
    ``knowledge_base`` lists what the agent held when it was asked.
    """
    from ..chatclient import create_agent

    async with server.client() as client:
        agent_id = await create_agent(client, "Retrieval eval", model=None, seed=False)
        names = await upload_all(client, agent_id)
        held = (await client.get("/api/rag/documents", params={"agentId": agent_id})).json()["documents"]
        rows = await ask_all(client, agent_id, names, limit)
    return {"questions": len(rows), "documents": len(names), "knowledge_base": sorted(d["name"] for d in held),
            **summarize(rows), "misses": misses(rows)}


def misses(rows: list[dict]) -> list[str]:
    """Held-out and dev questions whose first expected passage is not in the top 3 (for reading, not scoring)."""
    out = []
    for r in rows:
        if r["expected"] and not all(0 < p <= 3 for _, p in r["ranks"]):
            out.append(f"{r['id']} [{r['split']}] {r['query']} -> {', '.join(r['top'][:3])}")
        elif not r["expected"] and r["relevant"]:
            out.append(f"{r['id']} [{r['split']}] {r['query']} -> (answered) {', '.join(r['top'][:1])}")
    return out


COLUMNS = ("page_r1", "page_r3", "page_r5", "page_mrr", "passage_r1", "passage_r3", "passage_r5", "passage_mrr")


def render(result: dict) -> str:
    """The per-kind table of a result, as aligned text."""
    lines = [f"  {result.get('questions')} questions over {result.get('documents')} documents (topK {TOP_K})"]
    head = f"  {'split / kind':<24}" + "".join(f"{c:>12}" for c in COLUMNS) + f"{'abstain':>9}{'false-abst':>11}"
    for split in ("dev", "held-out"):
        lines += ["", head]
        for kind, s in result.get(split, {}).items():
            cells = "".join(f"{s.get(c, ''):>12}" for c in COLUMNS)
            lines.append(f"  {split + ' / ' + kind:<24}{cells}{s.get('abstain', ''):>9}{s.get('false_abstain', ''):>11}")
    return "\n".join(lines)

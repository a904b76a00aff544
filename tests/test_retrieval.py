"""Knowledge retrieval quality features: contextual chunks, heading sections, the unanswerable path."""
from __future__ import annotations

import pytest

from conftest import login, make_settings, running_app
from test_memory import OWNER, add_agent
from test_rag import ask, ingest
from xiajiao import Prompt

GUIDE = b"""# Harbor billing guide

Some words before the first section.

## Refunds

A subscription cancelled within 14 days is refunded in full. After that the plan stays active until the end of the
paid period. Nothing is refunded for partial months.

## Invoices

Invoices are issued on the first day of each period and can be downloaded as PDF.
"""


def test_a_document_is_cut_at_its_headings_and_every_chunk_starts_with_its_heading_path():
    from plugins.rag.store import plan, title_of

    text = GUIDE.decode()
    title = title_of(text, "guide.md")
    assert title == "Harbor billing guide"
    parents, chunks = plan(text, 800, 60, title=title)
    assert [p[2] for p in parents] == ["Harbor billing guide", "Harbor billing guide › Refunds",
                                       "Harbor billing guide › Invoices"]
    assert all(not (p[1].count("## ") > 1) for p in parents)  # no passage spans two sections
    refunds = [c for c in chunks if c[0] == 1]
    assert len(refunds) >= 3  # the section is cut into several chunks …
    assert all(c[2].startswith("Harbor billing guide › Refunds\n") for c in refunds)  # … each knows where it is
    assert "Nothing is refunded for partial months." in refunds[-1][2]
    body = refunds[-1][2].split("\n", 1)[1]
    assert text[refunds[-1][1]:refunds[-1][1] + len(body)] == body  # positions point into the document
    flat_parents, flat_chunks = plan(text, 800, 60, title=title, by_heading=False, context=False)
    assert len(flat_parents) == 1 and not flat_chunks[-1][2].startswith("Harbor")
    assert title_of("no heading here", "notes.txt") == "notes"


@pytest.mark.parametrize("contextual, found", [(True, True), (False, False)])
async def test_a_chunk_is_found_by_its_section_heading_only_with_contextual_chunks(tmp_path, contextual, found):
    # "Invoices" is only in the heading; the second chunk of the section never says it
    text = ("# Guide\n\n## Invoices\n\n" + "Billing documents arrive monthly by mail. " * 2
            + "\n\nThey list every member with the seat price and the tax rate.").encode()
    settings = make_settings(tmp_path, embedder="hash", chunk_size=70, parent_chunk_size=70,
                             rag_contextual_chunks=contextual)
    async with running_app(settings) as app:
        owner = app.test_client()
        await login(owner)
        agent = await add_agent(app, "agent_kb", "Librarian", knowledge=1)
        assert (await ingest(owner, agent["id"], "guide.md", text))["status"] == "ready"
        db = await app.xj.workspace_db(agent["id"], "rag.db")
        # what is embedded and indexed for words is chunks.text: both halves see the heading path
        matched = await db.fetchall("SELECT c.text FROM chunks_fts f JOIN chunks c ON c.id = f.rowid "
                                    "WHERE chunks_fts MATCH 'invoices'")
        assert any("seat price" in r["text"] for r in matched) is found
        results = await ask(owner, agent["id"], "Invoices seat price", 1)
        assert results[0]["heading"] == "Guide › Invoices"
        assert "Guide › Invoices" not in results[0]["chunk"]  # the result shows the document's own words


async def prompt_knowledge(app, agent, question: str) -> str:
    prompt = Prompt(soul="You are Librarian.")
    await app.xj.hook("prepare_prompt", prompt=prompt, agent=agent, channel=None,
                      message={"id": "m1", "content": question}, actor=OWNER)
    rendered = prompt.render()
    return rendered.split("## Knowledge\n", 1)[1] if "## Knowledge\n" in rendered else ""


async def test_when_nothing_relevant_is_found_the_prompt_says_so_and_offers_nothing_to_cite(tmp_path):
    from plugins.rag import NOTHING_FOUND

    settings = make_settings(tmp_path, embedder="hash", rag_min_relevance=0.5)
    async with running_app(settings) as app:
        owner = app.test_client()
        await login(owner)
        agent = await add_agent(app, "agent_kb", "Librarian", knowledge=1)
        assert await prompt_knowledge(app, agent, "Can I pay with Bitcoin?") == ""  # no documents: no section
        await ingest(owner, agent["id"], "guide.md", GUIDE)

        r = await owner.post("/api/rag/query", json={"agentId": agent["id"], "query": "zebra crossing", "topK": 3})
        body = await r.get_json()
        assert body["relevant"] is False and all(x["relevance"] < 0.5 for x in body["results"])
        section = await prompt_knowledge(app, agent, "zebra crossing")
        assert section == NOTHING_FOUND
        assert "[1]" not in section.replace("cite [n]", "")

        r = await owner.post("/api/rag/query", json={"agentId": agent["id"], "query": "refunded in full", "topK": 3})
        assert (await r.get_json())["relevant"] is True
        section = await prompt_knowledge(app, agent, "Is a subscription refunded in full?")
        assert section.startswith("Passages from your knowledge base; cite them as [n] when you use them.\n\n"
                                  "[1] guide.md › Refunds (passage 2)\n## Refunds")

"""A reply's citation markers lead to their passages: the prompt's numbered passages are remembered
per answered message, and /api/rag/citations gives them (and the document around them) to whoever
may read the reply's channel."""
from __future__ import annotations

import asyncio

import pytest

from chat_helpers import user_client
from conftest import llm_settings, login, running_app
from test_memory import add_agent
from test_rag import ingest

SECTIONS = "\n\n".join(f"## Topic {i}\n\nThe harbor crane number {i} lifts containers of grade {i}." for i in range(30))
GUIDE = (f"# Harbor guide\n\n{SECTIONS}\n\n## Refunds\n\nA subscription cancelled within 14 days is refunded in "
         f"full. Nothing is refunded for partial months.\n\n## Invoices\n\nInvoices are issued monthly.\n").encode()


@pytest.fixture
async def site(tmp_path, fake_llm):
    async with running_app(llm_settings(tmp_path, fake_llm, embedder="hash", rag_min_relevance=0.0,
                                        parent_chunk_size=200, chunk_size=100)) as app:
        owner = app.test_client()
        await login(owner)
        app.owner = owner
        yield app


async def reply_with_citation(app, fake_llm, question: str, answer: str, kind: str = "dm") -> tuple[str, dict]:
    agent = await add_agent(app, "agent_kb", "Librarian", knowledge=1)
    assert (await ingest(app.owner, agent["id"], "guide.md", GUIDE))["status"] == "ready"
    r = await app.owner.post("/api/channels", json={"name": "Ask", "type": kind, "agentIds": [agent["id"]]})
    channel_id = (await r.get_json())["id"]
    fake_llm.script(text=answer, chunks=2)
    r = await app.owner.post("/api/turns", json={"channelId": channel_id, "content": question})
    assert r.status_code == 200, await r.get_data(as_text=True)
    [reply] = (await r.get_json())["replies"]
    return channel_id, reply


async def citations_of(client, message_id: str) -> list[dict]:
    for _ in range(200):  # written beside the turn: wait until they are there
        r = await client.get(f"/api/rag/citations/{message_id}")
        assert r.status_code == 200, await r.get_data(as_text=True)
        found = (await r.get_json())["citations"]
        if found:
            return found
        await asyncio.sleep(0.01)
    return []


async def test_a_replys_citation_opens_the_cited_passage_in_its_document(site, fake_llm):
    channel_id, reply = await reply_with_citation(
        site, fake_llm, "Is a subscription cancelled within 14 days refunded in full?",
        "Yes, within 14 days it is refunded in full [1].")
    system = fake_llm.last.json["messages"][0]["content"]
    cited = await citations_of(site.owner, reply["id"])
    assert [c["n"] for c in cited] == list(range(1, len(cited) + 1))
    first = cited[0]
    assert first["documentName"] == "guide.md" and first["heading"] == "Harbor guide › Refunds"
    assert "refunded in full" in first["text"]
    assert f"[1] guide.md › Refunds (passage {first['passage'] + 1})\n{first['text']}" in system  # what the model read

    r = await site.owner.get(f"/api/rag/citations/{reply['id']}/document?n=1")
    body = await r.get_json()
    assert r.status_code == 200 and body["citation"] == first
    assert body["document"]["name"] == "guide.md" and body["document"]["passages"] > 30
    marked = [p for p in body["passages"] if p["cited"]]
    assert [p["passage"] for p in marked] == [first["passage"]] and marked[0]["text"] == first["text"]
    positions = [p["passage"] for p in body["passages"]]
    assert positions == sorted(positions) and len(positions) > 10  # the document around it, in order

    r = await site.owner.get(f"/api/rag/citations/{reply['id']}/document?n={len(cited) + 1}")
    assert (r.status_code, (await r.get_json())["code"]) == (404, "citation_not_found")
    for bad in ("", "?n=one", "?n=1.5"):
        r = await site.owner.get(f"/api/rag/citations/{reply['id']}/document{bad}")
        assert r.status_code == 400 and "code" in await r.get_json()
    r = await site.owner.get(f"/api/rag/citations/{reply['metadata']['replyTo']}")  # a person's message
    assert (await r.get_json())["citations"] == []


async def test_citations_are_for_those_who_may_read_the_channel(site, fake_llm):
    channel_id, reply = await reply_with_citation(site, fake_llm, "@Librarian refunded in full?", "Yes [1].", "group")
    assert await citations_of(site.owner, reply["id"])
    outsider, _ = await user_client(site, "outsider", "member")
    for path in (f"/api/rag/citations/{reply['id']}", f"/api/rag/citations/{reply['id']}/document?n=1"):
        r = await outsider.get(path)
        assert (r.status_code, (await r.get_json())["code"]) == (404, "channel_not_found")
    reader, guest = await user_client(site, "reader", "guest")
    r = await site.owner.post(f"/api/channels/{channel_id}/members", json={"userIds": [guest["id"]]})
    assert r.status_code < 300, await r.get_data(as_text=True)
    r = await reader.get(f"/api/rag/citations/{reply['id']}/document?n=1")
    assert r.status_code == 200 and "refunded in full" in (await r.get_json())["citation"]["text"]
    r = await site.owner.get("/api/rag/citations/msg_nothing")
    assert (r.status_code, (await r.get_json())["code"]) == (404, "message_not_found")


async def test_deleting_the_document_takes_its_citations_along(site, fake_llm):
    _, reply = await reply_with_citation(site, fake_llm, "refunded in full?", "Yes [1].")
    assert await citations_of(site.owner, reply["id"])
    docs = (await (await site.owner.get("/api/rag/documents?agentId=agent_kb")).get_json())["documents"]
    r = await site.owner.delete(f"/api/rag/documents/{docs[0]['id']}?agentId=agent_kb")
    assert r.status_code == 200
    r = await site.owner.get(f"/api/rag/citations/{reply['id']}")
    assert (await r.get_json())["citations"] == []


async def test_passages_a_knowledge_search_found_during_the_answer_are_cited_after_the_prompts(site, fake_llm):
    from fake_llm import Call, Reply

    agent = await add_agent(site, "agent_kb", "Librarian", knowledge=1)
    await site.owner.put("/api/agents/agent_kb", json={"tools": ["rag_query"]})
    assert (await ingest(site.owner, agent["id"], "guide.md", GUIDE))["status"] == "ready"
    r = await site.owner.post("/api/channels", json={"name": "Ask", "type": "dm", "agentIds": [agent["id"]]})
    channel_id = (await r.get_json())["id"]
    fake_llm.script(Reply(tool_calls=[Call("rag_query", {"query": "When are invoices issued?", "topK": 2})]),
                    Reply(text="Monthly [3], and refunds within 14 days [1]."))
    r = await site.owner.post("/api/turns", json={"channelId": channel_id, "content": "Refunded in full?"})
    assert r.status_code == 200, await r.get_data(as_text=True)
    reply = [m for m in (await r.get_json())["replies"] if m["type"] == "text"][-1]
    system = fake_llm.chat_requests()[0].json["messages"][0]["content"]
    in_prompt = sum(1 for n in range(1, 6) if f"[{n}] guide.md" in system)
    assert in_prompt >= 1
    [tool_msg] = [m["content"] for m in fake_llm.chat_requests()[1].json["messages"] if m["role"] == "tool"]
    found = __import__("json").loads(tool_msg)["results"]
    assert [x["cite"] for x in found] == [in_prompt + 1, in_prompt + 2]  # numbered after the prompt's

    cited = await citations_of(site.owner, reply["id"])
    assert [c["n"] for c in cited] == list(range(1, in_prompt + 3))
    assert [(c["documentId"], c["passage"]) for c in cited[in_prompt:]] == [(x["documentId"], x["passage"])
                                                                           for x in found]
    r = await site.owner.get(f"/api/rag/citations/{reply['id']}/document?n={in_prompt + 1}")
    assert r.status_code == 200 and (await r.get_json())["citation"]["text"] == found[0]["text"]

    # answering the message again numbers from the prompt again: the search's rows do not pile up
    fake_llm.script(Reply(text="Yes [1]."))
    r = await site.owner.post(f"/api/messages/{reply['id']}/regenerate")
    assert r.status_code in (200, 202), await r.get_data(as_text=True)
    for _ in range(300):  # the new version's prompt replaces the rows of the earlier answer
        now = [c["n"] for c in (await (await site.owner.get(f"/api/rag/citations/{reply['id']}")).get_json())["citations"]]
        if now == list(range(1, in_prompt + 1)):
            break
        await asyncio.sleep(0.02)
    assert now == list(range(1, in_prompt + 1))

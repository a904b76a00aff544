"""The retrieval and memory evaluations measure the project's own documents and memories only.

The bench's default (realistic) load profile gives every agent it creates a few memories and a
generated 8 KB handbook. An evaluation agent made that way answered most questions from that
handbook (held-out page recall@3 0.618 instead of 0.842): these tests run both evaluations, in
that profile, against the real server and check what the evaluated agent held and was answered from.
"""
from __future__ import annotations

from bench import harness
from bench.harness import Server
from bench.recall import CONVERSATION
from bench.recall import evaluate as evaluate_memory
from bench.retrieval import documents
from bench.retrieval import evaluate as evaluate_knowledge


async def test_the_retrieval_evaluation_asks_a_knowledge_base_of_its_own_documents_only(tmp_path):
    assert harness.realistic()  # the profile whose agents come with a seeded knowledge base
    keys = {key for key, _ in documents()}
    server = Server(tmp_path / "data", access_log=False, env={"XIAJIAO_EMBEDDER": "hash"})
    async with server:
        await server.login()
        result = await evaluate_knowledge(server, limit=12)
    assert result["knowledge_base"] == sorted(key.split("/")[-1] for key in keys)
    answered_from = {line.split(" -> ")[-1] for line in result["misses"]}
    assert not any("handbook" in names for names in answered_from), answered_from


async def test_the_memory_evaluation_searches_the_conversations_memories_only(tmp_path):
    assert harness.realistic()
    server = Server(tmp_path / "data", access_log=False, env={"XIAJIAO_EMBEDDER": "hash"})
    async with server:
        await server.login()
        result = await evaluate_memory(server, limit=4)
    assert result["writes"] == len(CONVERSATION)
    assert result["memories"] == result["statuses"].get("created", 0)

"""Attachments agents can read: images as image parts (OpenAI and Anthropic), documents through the
parser plugins within the token budget, a note for models that cannot see, bad files refused."""
from __future__ import annotations

import base64
import io

import pytest
from quart.datastructures import FileStorage

from conftest import llm_settings, login, running_app
from test_parsers import pdf_with_text

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


@pytest.fixture
async def site(tmp_path, fake_llm):
    settings = llm_settings(tmp_path, fake_llm, vision_models="fake-model,fake-claude", attachment_tokens=60)
    async with running_app(settings) as app:
        c = app.test_client()
        await login(c)
        app.owner = c
        yield app


async def upload(app, data: bytes, name: str) -> dict:
    resp = await app.owner.post("/api/upload", files={"file": FileStorage(io.BytesIO(data), filename=name)})
    assert resp.status_code == 200, await resp.get_data(as_text=True)
    return await resp.get_json()


async def dm(app, agent="translator") -> str:
    resp = await app.owner.post("/api/channels", json={"name": "t", "type": "dm", "agentIds": [agent]})
    return (await resp.get_json())["id"]


async def ask(app, cid, content, files):
    resp = await app.owner.post("/api/turns", json={"channelId": cid, "content": content,
                                                    "metadata": {"attachments": files}})
    assert resp.status_code == 200, await resp.get_data(as_text=True)
    return await resp.get_json()


async def test_several_files_with_a_question_reach_an_openai_vision_model(site, fake_llm):
    cid = await dm(site)
    image = await upload(site, PNG, "chart.png")
    pdf = await upload(site, pdf_with_text(["Quarterly revenue was 42 million"]), "report.pdf")
    body = await ask(site, cid, "What do these say?", [image, pdf])
    assert [a["name"] for a in body["message"]["metadata"]["attachments"]] == ["chart.png", "report.pdf"]
    last = fake_llm.last.messages[-1]
    assert last["role"] == "user" and isinstance(last["content"], list)
    text = last["content"][0]["text"]
    assert "[Attached file: report.pdf]" in text and "Quarterly revenue was 42 million" in text
    assert text.endswith("What do these say?")
    assert last["content"][1] == {"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(PNG).decode()}}


async def test_an_image_reaches_an_anthropic_model_as_an_image_block(site, fake_llm):
    site.xj.engine.agents.by_id["translator"]["model"] = "env-anthropic/fake-claude"
    cid = await dm(site)
    image = await upload(site, PNG, "cat.png")
    await ask(site, cid, "what is this?", [image])
    blocks = fake_llm.last.json["messages"][-1]["content"]
    assert blocks[0] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                     "data": base64.b64encode(PNG).decode()}}
    assert blocks[1]["type"] == "text" and blocks[1]["text"].endswith("what is this?")


async def test_a_model_that_cannot_see_gets_a_note_naming_the_image(site, fake_llm):
    site.xj.engine.agents.by_id["translator"]["model"] = "env-openai/fake-model-2"
    cid = await dm(site)
    image = await upload(site, PNG, "cat.png")
    await ask(site, cid, "what is this?", [image])
    last = fake_llm.last.messages[-1]
    assert isinstance(last["content"], str)
    assert "[Attached image: cat.png. This model cannot see images" in last["content"]


async def test_a_long_document_is_cut_to_the_token_budget_and_named(site, fake_llm):
    cid = await dm(site)
    doc = await upload(site, ("word " * 2000).encode(), "notes.md")
    await ask(site, cid, "summarize", [doc])
    text = fake_llm.last.messages[-1]["content"]
    assert "[Attached file: notes.md]" in text and "notes.md is cut here" in text
    assert len(text) < 1000 and text.endswith("summarize")


async def test_bad_attachments_are_refused_with_a_code(site, tmp_path):
    cid = await dm(site)
    resp = await site.owner.post("/api/messages", json={"channelId": cid, "content": "see",
                                                        "metadata": {"attachments": [{"url": "/etc/passwd"}]}})
    assert (resp.status_code, (await resp.get_json())["code"]) == (400, "invalid_attachment")
    resp = await site.owner.post("/api/upload", files={"file": FileStorage(io.BytesIO(b"\x7fELF\x02\x01\x01" + b"\0" * 64),
                                                                           filename="a.bin")})
    assert (resp.status_code, (await resp.get_json())["code"]) == (415, "unsupported_file_type")
    assert await site.xj.db.fetchval("SELECT COUNT(*) FROM messages WHERE channel_id = ?", (cid,)) == 0


async def test_an_attachment_over_the_size_limit_is_refused(tmp_path, fake_llm):
    async with running_app(llm_settings(tmp_path, fake_llm, max_upload_bytes=1000)) as app:
        c = app.test_client()
        await login(c)
        resp = await c.post("/api/upload", files={"file": FileStorage(io.BytesIO(b"x" * 5000), filename="big.txt")})
        assert resp.status_code == 413 and (await resp.get_json())["code"] in ("file_too_large", "too_large")

"""End-to-end conversations in the real browser: resume after reload mid-stream, a failed provider
with Retry, regenerate and edit-and-resend, a branch that inherits history, a chain waiting for
approval across a server restart, an image and a PDF reaching the model."""
from __future__ import annotations

import base64
import re

import pytest
import pytest_asyncio
from playwright.async_api import expect

from conftest import live_server, llm_settings
from fake_llm import FakeLLM, Reply
from test_parsers import pdf_with_text
from test_ui_browser import (  # noqa: F401  (fixture)
    SHOTS_DIR, VIEWPORTS, browser, log_in, new_page, no_attack_ran, open_dm, owner_page, say)

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


@pytest_asyncio.fixture(loop_scope="module")
async def fake():
    async with FakeLLM() as f:
        yield f


@pytest_asyncio.fixture(loop_scope="module")
async def site(tmp_path, fake):
    async with live_server(llm_settings(tmp_path, fake, vision_models="fake-model")) as (app, base):
        yield app, base


def agent_name(app, agent_id="translator"):
    return app.xj.engine.agents.get(agent_id)["name"]


async def test_reload_mid_stream_keeps_the_text_growing_with_stop_and_ends_right(browser, site, fake, tmp_path):
    app, base = site
    page = await new_page(browser, base)
    await log_in(page, base)
    name = agent_name(app)
    await open_dm(page, name)
    words = [f"word{i:02d} " for i in range(30)]
    fake.script(Reply(text="".join(words), chunks=30, delay=0.12))
    await say(page, "count slowly")
    streaming = page.locator(".msg.agent.streaming .md")
    await expect(streaming).to_contain_text("word02")
    await page.reload()
    await page.wait_for_selector("body[data-ready=app]")
    # after the reload: the text so far is there, it keeps growing, Stop is offered
    await expect(page.locator(".msg.agent.streaming .md")).to_contain_text("word0")
    await expect(page.locator("#btn-stop")).to_be_visible()
    before = len(await page.locator(".msg.agent.streaming .md").text_content())
    await expect(page.locator(".msg.agent.streaming .md")).to_contain_text("word20", timeout=15000)
    assert len(await page.locator(".msg.agent.streaming .md").text_content()) > before
    done = page.locator(".msg.agent:not(.streaming)")
    await expect(done).to_have_count(1, timeout=15000)
    await expect(done.locator(".md")).to_have_text("".join(words).strip())  # each word once: no gap, no repeat
    await expect(done.locator(".msg-name")).to_have_text(name)
    await expect(page.locator("#btn-stop")).to_be_hidden()
    await expect(page.locator("#thinking")).to_be_hidden()
    await page.screenshot(path=str(tmp_path / "resume.png"))
    await no_attack_ran(page)
    assert page.errors == []
    await page.context.close()


async def test_a_failed_provider_is_the_agents_message_with_the_reason_and_retry(browser, site, fake, tmp_path):
    app, base = site
    page = await new_page(browser, base, lang="zh")
    await log_in(page, base)
    name = agent_name(app)
    await open_dm(page, name)
    fake.script(Reply(status=401, error_message="invalid api key"))
    await say(page, "你好")
    failed = page.locator(".msg.agent").last
    await expect(failed.locator(".msg-flag.error .failure-text")).to_have_text(
        "模型服务商拒绝了 API 密钥。请在设置里检查密钥。")
    await expect(failed.locator(".msg-name")).to_have_text(name)
    await page.reload()
    await page.wait_for_selector("body[data-ready=app]")
    failed = page.locator(".msg.agent").last
    await expect(failed.locator(".msg-flag.error")).to_have_attribute("data-reason", "key_rejected")
    await expect(failed.locator(".failure-text")).to_have_text("模型服务商拒绝了 API 密钥。请在设置里检查密钥。")
    assert "[object Object]" not in await page.locator("#message-list").text_content()
    await page.set_viewport_size({"width": 390, "height": 800})
    await page.screenshot(path=str(tmp_path / "failed-390.png"))
    await failed.locator(".act-retry").click()  # the fake model has recovered
    reply = page.locator(".msg.agent:not(.streaming)").last
    await expect(reply.locator(".md")).to_have_text("Echo: 你好")
    await expect(page.locator(".msg.agent")).to_have_count(1)  # the retry took the failed one's place
    await expect(reply.locator(".version-pos")).to_have_text("2/2")
    assert page.errors == []
    await page.context.close()


async def test_regenerate_browses_versions_and_edit_and_resend_answers_the_edit(browser, site, fake, tmp_path):
    app, base = site
    page = await new_page(browser, base)
    await log_in(page, base)
    await open_dm(page, agent_name(app))
    fake.script(Reply(text="first answer"))
    await say(page, "a question")
    reply = page.locator(".msg.agent:not(.streaming)").last
    await expect(reply.locator(".md")).to_have_text("first answer")
    fake.script(Reply(text="second answer", chunks=3))
    await reply.hover()
    await reply.locator(".act-regenerate").click()
    reply = page.locator(".msg.agent:not(.streaming)").last
    await expect(reply.locator(".md")).to_have_text("second answer")
    await expect(reply.locator(".version-pos")).to_have_text("2/2")
    await reply.locator(".act-prev").click()
    reply = page.locator(".msg.agent").last
    await expect(reply.locator(".md")).to_have_text("first answer")
    await expect(reply.locator(".version-pos")).to_have_text("1/2")
    await page.reload()
    await page.wait_for_selector("body[data-ready=app]")
    await expect(page.locator(".msg.agent")).to_have_count(1)
    await expect(page.locator(".msg.agent .md")).to_have_text("second answer")
    # copy gives the reply's text
    await page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    agent_msg = page.locator(".msg.agent").last
    await agent_msg.hover()
    await agent_msg.locator(".act-copy").click()
    await expect(agent_msg.locator(".act-copy")).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == "second answer"
    # edit one's own message: Esc cancels, Enter re-sends and the agent answers the edited text
    own = page.locator(".msg.own").last
    await own.hover()
    await own.locator(".act-edit").click()
    await page.keyboard.press("Escape")
    await expect(own.locator(".edit-form")).to_have_count(0)
    await own.hover()
    await own.locator(".act-edit").click()
    await own.locator(".edit-input").fill("an edited question")
    await own.locator(".edit-input").press("Enter")
    await expect(page.locator(".msg.own .md").last).to_have_text("an edited question")
    await expect(page.locator(".msg.agent:not(.streaming) .md").last).to_have_text("Echo: an edited question")
    await expect(page.locator(".msg.agent .version-pos").last).to_have_text("3/3")
    assert [m["content"] for m in fake.last.messages if m["role"] != "system"] == ["an edited question"]
    await page.screenshot(path=str(tmp_path / "versions.png"))
    assert page.errors == []
    await page.context.close()


async def test_a_branch_inherits_the_history_and_the_model_receives_it(browser, site, fake, tmp_path):
    app, base = site
    page = await new_page(browser, base)
    await log_in(page, base)
    await open_dm(page, agent_name(app))
    await say(page, "my name is Ada")
    first = page.locator(".msg.agent:not(.streaming)").first
    await expect(first.locator(".md")).to_have_text("Echo: my name is Ada")
    await say(page, "I live in Paris")
    await expect(page.locator(".msg.agent:not(.streaming)")).to_have_count(2)
    await first.hover()
    await first.locator(".act-branch").click()
    await expect(page.locator("#chat-sub")).to_contain_text("↳")
    await expect(page.locator(".msg.inherited")).to_have_count(2)
    branch_item = page.locator(".chat-item.child[data-depth='1']")
    await expect(branch_item).to_have_count(1)
    fake.script(Reply(text="You are Ada"))
    await say(page, "who am I?")
    await expect(page.locator(".msg.agent:not(.inherited):not(.streaming) .md")).to_have_text("You are Ada")
    sent = [(m["role"], m["content"]) for m in fake.last.messages if m["role"] != "system"]
    assert sent == [("user", "my name is Ada"), ("assistant", "Echo: my name is Ada"), ("user", "who am I?")]
    # a new topic of the same chat starts empty
    await page.click("#btn-topic")
    await page.fill("#topic-name", "Holidays")
    await page.click("#topic-save")
    await expect(page.locator("#chat-name")).to_have_text("Holidays")
    await expect(page.locator(".msg")).to_have_count(0)
    await expect(page.locator(".chat-item.child")).to_have_count(2)
    await page.screenshot(path=str(tmp_path / "tree.png"))
    await page.set_viewport_size({"width": 390, "height": 800})
    await page.click("#btn-back")
    await page.screenshot(path=str(tmp_path / "tree-390.png"))
    assert page.errors == []
    await page.context.close()


async def test_a_chain_waiting_for_approval_survives_a_server_restart(browser, tmp_path, fake):
    settings = llm_settings(tmp_path, fake)
    page = None
    async with live_server(settings) as (app, base):
        page = await new_page(browser, base)
        await log_in(page, base)
        r = await page.request.post(base + "/api/channels", data={
            "name": "接力", "type": "group", "agentIds": ["novelist", "editor"]})
        cid = (await r.json())["id"]
        await page.request.put(base + f"/api/channels/{cid}/chain",
                               data={"agentIds": ["novelist", "editor"], "approval": True})
        await page.goto(base + f"/#/c/{cid}")
        await page.reload()
        await page.wait_for_selector("body[data-ready=app]")
        fake.script(Reply(text="Draft: 虾饺."), Reply(text="Final: shrimp dumplings."))
        await say(page, "write")
        await expect(page.locator("#panel .chain")).to_have_attribute("data-status", "paused")
    async with live_server(settings) as (app, base):  # same data folder and port: a restart
        await page.reload()
        await page.wait_for_selector("body[data-ready=app]")
        chain = page.locator("#panel .chain")
        await expect(chain).to_have_attribute("data-status", "paused")
        await expect(chain.locator(".handoff")).to_have_value("Draft: 虾饺.")
        await expect(chain.locator(".run-meta")).to_contain_text("Owner")
        await page.screenshot(path=str(tmp_path / "chain-restart.png"))
        await chain.locator(".act-approve").click()
        await expect(chain).to_have_attribute("data-status", "completed")
        await expect(page.locator(".msg.agent:not(.streaming) .md").last).to_have_text("Final: shrimp dumplings.")
        assert "Draft: 虾饺." in fake.last.json["messages"][-1]["content"]
        assert page.errors == []
        await page.context.close()


async def test_an_image_and_a_pdf_reach_the_model_with_the_question(browser, site, fake, tmp_path):
    app, base = site
    page = await new_page(browser, base)
    await log_in(page, base)
    await open_dm(page, agent_name(app))
    image, pdf = tmp_path / "chart.png", tmp_path / "report.pdf"
    image.write_bytes(PNG)
    pdf.write_bytes(pdf_with_text(["Revenue grew 42 percent"]))
    await page.set_input_files("#file-input", [str(image), str(pdf)])
    await expect(page.locator("#attachments .attachment:not(.uploading)")).to_have_count(2)
    await page.fill("#composer-input", "What do these show?")
    await page.screenshot(path=str(tmp_path / "attach.png"))
    fake.script(Reply(text="A chart and a report."))
    await page.press("#composer-input", "Enter")
    own = page.locator(".msg.own").last
    await expect(own.locator(".msg-image")).to_have_count(1)
    await expect(own.locator(".file-name")).to_have_text("report.pdf")
    await expect(page.locator(".msg.agent:not(.streaming) .md")).to_have_text("A chart and a report.")
    await expect(page.locator("#attachments .attachment")).to_have_count(0)
    # the image opens in the viewer; Esc closes the viewer first, then the side panel
    await page.click("#btn-knowledge")
    await expect(page.locator("#panel")).to_be_visible()
    await own.locator(".msg-image").click()
    await expect(page.locator("#lightbox")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.locator("#lightbox")).to_be_hidden()
    await expect(page.locator("#panel")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(page.locator("#panel")).to_be_hidden()
    last = fake.last.messages[-1]
    assert last["content"][1] == {"type": "image_url",
                                  "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}}
    text = last["content"][0]["text"]
    assert "[Attached file: report.pdf]" in text and "Revenue grew 42 percent" in text
    assert text.endswith("What do these show?")
    # a file of an unknown type is refused; the draft (text) stays
    bad = tmp_path / "tool.bin"
    bad.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 64)
    await page.fill("#composer-input", "and this?")
    await page.set_input_files("#file-input", str(bad))
    await expect(page.locator(".toast.error")).to_be_visible()
    assert await page.input_value("#composer-input") == "and this?"
    await expect(page.locator("#attachments .attachment")).to_have_count(0)
    assert page.errors == []
    await page.context.close()


async def test_a_group_without_default_agent_says_why_nobody_answers(browser, site):
    app, base = site
    page = await new_page(browser, base)
    await log_in(page, base)
    r = await page.request.post(base + "/api/channels", data={"name": "Quiet", "type": "group",
                                                              "agentIds": ["novelist", "editor"]})
    cid = (await r.json())["id"]
    await page.goto(base + f"/#/c/{cid}")
    await page.reload()
    await expect(page.locator("#chat-name")).to_have_text("Quiet")
    await say(page, "hello?")
    await expect(page.locator("#composer-hint")).to_have_text(re.compile("no default agent"))
    await expect(page.locator("#thinking")).to_be_hidden()
    await page.context.close()


async def test_a_provider_is_edited_with_the_models_its_endpoint_lists(browser, tmp_path):
    from conftest import make_settings

    async with FakeLLM() as other, live_server(make_settings(tmp_path, demo_delay=0.0)) as (app, base):
        page = await new_page(browser, base)
        await log_in(page, base)
        r = await page.request.put(base + "/api/settings", data={"providers": [
            {"id": "lab", "kind": "openai", "baseUrl": other.base_url, "apiKey": "sk-lab-123456", "models": ["x"]}]})
        assert (await r.json())["defaultModel"] == "demo/demo"  # adding it moved nobody
        await page.click("#btn-settings")
        row = page.locator(".provider[data-name=lab]")
        await row.locator(".act-models").click()
        await expect(row.locator(".test-result")).to_contain_text("3 models")
        await expect(page.locator("#provider-models")).to_have_value("fake-claude, fake-model, fake-model-2")
        await page.click("#provider-add")
        await expect(page.locator(".provider[data-name=lab] .small").last).to_have_text(
            "fake-claude, fake-model, fake-model-2")
        settings = await (await page.request.get(base + "/api/settings")).json()
        lab = next(p for p in settings["providers"] if p["id"] == "lab")
        assert lab["models"] == ["fake-claude", "fake-model", "fake-model-2"] and lab["apiKey"] != ""
        assert app.xj.engine.gateway.config("lab").api_key == "sk-lab-123456"  # the masked key kept the stored one
        assert settings["defaultModel"] == "demo/demo"
        values = await page.eval_on_selector_all("#default-model option", "os => os.map(o => o.value)")
        assert len(values) == len(set(values)) and "lab/fake-model" in values and "fake-model" not in values
        await expect(page.locator("#default-model option[value='lab/fake-model']")).to_have_text("fake-model — lab")
        assert "[object Object]" not in await page.locator(".providers").text_content()
        await expect(row.locator(".pill.closed")).to_have_text("healthy")
        await page.screenshot(path=str(tmp_path / "providers.png"))
        assert page.errors == []
        await page.context.close()


async def test_a_topic_is_renamed_and_deleted_and_another_screen_follows(browser, site, tmp_path):
    """The owner on a desktop and on a phone: a topic made on one appears on the other; renamed on the
    desktop, the phone's header and list show the new name; deleted, the phone goes back to the chat."""
    app, base = site
    desk = await owner_page(browser, base, VIEWPORTS[0])
    name = agent_name(app, "editor")
    await open_dm(desk, name)
    await say(desk, "a first question")
    await expect(desk.locator(".msg.agent:not(.streaming)")).to_have_count(1)
    dm_url = desk.url
    await desk.click("#btn-topic")
    await desk.fill("#topic-name", "Holidays")
    await desk.click("#topic-save")
    await expect(desk.locator("#chat-name")).to_have_text("Holidays")
    # a DM itself cannot be renamed or deleted from here; the topic can
    await expect(desk.locator("#btn-rename-topic")).to_be_visible()
    await expect(desk.locator("#btn-delete-topic")).to_be_visible()
    phone = await owner_page(browser, base, VIEWPORTS[1])
    await phone.goto(desk.url)
    await phone.wait_for_selector("body[data-ready=app]")
    await expect(phone.locator("#chat-name")).to_have_text("Holidays")

    await desk.click("#btn-rename-topic")
    await expect(desk.locator("#topic-rename-name")).to_have_value("Holidays")
    await desk.fill("#topic-rename-name", "假期 plans")
    await desk.click("#topic-rename-save")
    await expect(desk.locator("#chat-name")).to_have_text("假期 plans")
    await expect(desk.locator(".chat-item.child", has_text="假期 plans")).to_have_count(1)
    await expect(phone.locator("#chat-name")).to_have_text("假期 plans")  # live, no reload
    await desk.screenshot(path=str(tmp_path / "topic-renamed.png"))
    await phone.screenshot(path=str(tmp_path / "topic-renamed-390.png"))
    if SHOTS_DIR:
        await desk.screenshot(path=str(SHOTS_DIR / "topic-renamed.png"))
        await phone.screenshot(path=str(SHOTS_DIR / "topic-renamed-390.png"))
    await desk.reload()
    await desk.wait_for_selector("body[data-ready=app]")
    await expect(desk.locator("#chat-name")).to_have_text("假期 plans")  # stored, not only on screen

    desk.on("dialog", lambda d: d.accept())
    await desk.click("#btn-delete-topic")
    # both screens are back in the agent's chat with its message; the topic is gone from the lists
    await expect(desk.locator("#chat-name")).to_have_text(name)
    await expect(desk.locator(".msg.agent .md")).to_have_text("Echo: a first question")
    await expect(desk.locator(".chat-item.child")).to_have_count(0)
    await expect(phone.locator("#chat-name")).to_have_text(name)
    assert desk.url == dm_url
    r = await desk.request.get(base + "/api/channels")
    assert "假期 plans" not in [c.get("name") for c in (await r.json())["channels"]]
    await phone.reload()
    await phone.wait_for_selector("body[data-ready=app]")
    await expect(phone.locator("#chat-name")).to_have_text(name)
    assert [e for e in desk.errors if not e.startswith("dialog")] == [] and phone.errors == []
    await desk.context.close()
    await phone.context.close()

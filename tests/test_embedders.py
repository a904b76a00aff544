"""Embedders: the deterministic test embedder, the local models, the OpenAI-compatible one, the choice."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT, bundled_settings, make_settings, running_app
from fake_llm import fake_vector
from plugins.embedders import E5Small, HashEmbedder, OpenAIEmbedder, UseM3
from xiajiao import ProviderError, active_embedder


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b))


async def test_hash_embedder_is_normalized_deterministic_and_matches_shared_spelling():
    e = HashEmbedder()
    texts = ["Deploy with docker compose", "deploy with Docker Compose!", "部署流程", "部署的流程", "", "cooking pasta"]
    vecs = await e.embed(texts)
    assert [len(v) for v in vecs] == [256] * 6
    assert [round(math.sqrt(sum(x * x for x in v)), 5) for v in vecs] == [1.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    assert vecs == await e.embed(texts)
    assert cosine(vecs[0], vecs[1]) > 0.85
    assert cosine(vecs[2], vecs[3]) > cosine(vecs[2], vecs[5])
    assert cosine(vecs[0], vecs[1]) > cosine(vecs[0], vecs[5]) + 0.5
    # a batch gives each text the vector it gets alone
    assert (await e.embed(["部署流程"]))[0] == vecs[2]


def test_hash_embedder_is_the_same_in_another_process():
    code = ("import asyncio; from plugins.embedders import HashEmbedder; "
            "print(asyncio.run(HashEmbedder().embed(['虾饺 agent memory']))[0][:8])")
    outs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout for seed in ("1", "2")}
    assert len(outs) == 1 and outs.pop().startswith("[")


@pytest.mark.parametrize("cls, dim", [(E5Small, 384), (UseM3, 512)])
async def test_local_models_load_on_first_use_and_embed_both_languages(cls, dim):
    e = cls()
    assert e._model is None  # constructing (as registration does) loads nothing
    q, en, zh, other = await e.embed(["how do I deploy with docker"], kind="query") + await e.embed(
        ["Deploy Xiajiao with Docker Compose", "使用 Docker Compose 部署虾饺", "A recipe for apple pie"])
    assert e._model is not None and len(q) == dim
    assert round(math.sqrt(sum(x * x for x in q)), 4) == 1.0
    assert cosine(q, en) > cosine(q, other) and cosine(q, zh) > cosine(q, other)


async def test_the_server_starts_without_loading_a_model(tmp_path):
    async with running_app(make_settings(tmp_path)) as app:
        e5 = app.xj.embedders.get("e5-small")
        assert e5._model is None
        assert (await active_embedder(app.xj)) is e5
        assert e5._model is not None


@pytest.mark.parametrize("overrides, expected", [
    ({}, "e5-small"),
    ({"embedder": "hash"}, "hash"),
    ({"embedder": "use-m3"}, "use-m3"),
])
async def test_the_active_embedder_is_the_setting_or_the_best_usable(tmp_path, overrides, expected):
    async with running_app(make_settings(tmp_path, **overrides)) as app:
        assert sorted(app.xj.embedders.names()) == ["e5-small", "hash", "openai", "use-m3"]
        assert (await active_embedder(app.xj)).name == expected


async def test_an_unknown_embedder_is_a_clear_error(tmp_path):
    async with running_app(make_settings(tmp_path, embedder="word2vec")) as app:
        with pytest.raises(ProviderError) as err:
            await active_embedder(app.xj)
        assert err.value.code == "unknown_embedder"
        assert "word2vec" in err.value.message and "e5-small" in err.value.message


async def test_openai_embedder_speaks_v1_embeddings(tmp_path, fake_llm):
    settings = make_settings(tmp_path, embedder="openai", embedding_base_url=fake_llm.base_url,
                             embedding_api_key="sk-test", embedding_model="fake-embed")
    async with running_app(settings) as app:
        e = await active_embedder(app.xj)
        assert (e.name, e.dim) == ("openai", 16)  # learnt from the endpoint's first answer
        vecs = await e.embed(["one", "two", "one"])
        assert len(vecs) == 3 and vecs[0] == vecs[2] != vecs[1] and len(vecs[0]) == 16
        # asked as base64 float32 and decoded exactly: the fake's vector, to float32 precision
        assert vecs[1] == pytest.approx(fake_vector("two", 16), abs=1e-6)
        sent = [r for r in fake_llm.requests if r.path == "/v1/embeddings"]
        assert sent[-1].json["input"] == ["one", "two", "one"] and sent[-1].json["model"] == "fake-embed"
        assert sent[-1].json["encoding_format"] == "base64"
        assert sent[-1].headers.get("authorization") == "Bearer sk-test"


async def test_openai_embedder_is_skipped_unless_configured_and_fails_clearly(tmp_path, fake_llm):
    assert not OpenAIEmbedder.configured(bundled_settings(tmp_path))
    settings = make_settings(tmp_path, embedder="openai", embedding_base_url="http://127.0.0.1:9/v1",
                             embedding_api_key="sk", provider_retries=0, connect_timeout=1.0)
    async with running_app(settings) as app:
        with pytest.raises(ProviderError) as err:
            await active_embedder(app.xj)
        assert err.value.code == "embedding_failed"


async def test_openai_embedder_never_imports_the_openai_sdk(tmp_path, fake_llm):
    """Importing the SDK cost 1.3 s inside the event loop on the first embedding; plain HTTP needs none."""
    code = ("import asyncio, sys; sys.path.insert(0, 'tests'); from conftest import make_settings, running_app\n"
            "from fake_llm import FakeLLM\nfrom xiajiao import active_embedder\nimport pathlib, tempfile\n"
            "async def main():\n"
            "    async with FakeLLM() as fake:\n"
            "        s = make_settings(pathlib.Path(tempfile.mkdtemp()), embedder='openai', embedding_base_url=fake.base_url,"
            " embedding_api_key='k')\n"
            "        async with running_app(s) as app:\n"
            "            e = await active_embedder(app.xj)\n"
            "            await e.embed(['x'])\n"
            "    print('openai' in sys.modules)\n"
            "asyncio.run(main())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


async def test_e5_batches_give_each_text_the_vector_it_gets_alone():
    e = E5Small()
    texts = ["Deploy Xiajiao with Docker Compose and keep the data folder on a volume.",
             "使用 Docker Compose 部署虾饺，数据目录挂载为卷。",
             "A recipe for apple pie",
             "部署 › 备份\n每天凌晨备份 data 目录，保留七天。 Backups run nightly and are kept for seven days.",
             ""]
    alone = [(await e.embed([t]))[0] for t in texts]
    together = await e.embed(texts)
    assert [round(cosine(a, b), 4) for a, b in zip(alone, together)] == [1.0] * len(texts)
    assert max(abs(x - y) for a, b in zip(alone, together) for x, y in zip(a, b)) < 1e-4


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_e5_threads_sleep_while_they_wait_unless_told_otherwise(given, expected):
    # the OpenMP runtime reads OMP_WAIT_POLICY once, when the engine loads: a process of its own
    code = ("import asyncio, os; from plugins.embedders import E5Small; e = E5Small(); "
            "v = asyncio.run(e.embed(['部署虾饺 with Docker'])); "
            "print(os.environ.get('OMP_WAIT_POLICY'), len(v[0]))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env=env).stdout.split()
    assert out == [expected, "384"]


async def test_e5_vectors_lose_the_language_so_a_question_finds_its_answer_in_the_other_language():
    # the share of a same-language paraphrase's margin over unrelated passages that the other
    # language's paraphrase reaches: the model's own vectors keep the language (well below 1),
    # the centred ones much less of it
    e = E5Small()
    questions = ["How many days do I have to return a product?", "Where can I park my car at the office?",
                 "How long is the warranty of the laptop?"]
    chinese = ["购买后三十天内可以退货，运费由我们承担。", "员工可以把车停在办公楼地下二层的停车场。", "笔记本电脑享受两年保修。"]
    english = ["Products can be returned within thirty days of purchase, and we pay the shipping.",
               "Staff can park in the garage on the second basement level of the office building.",
               "Laptops come with a two-year warranty."]
    unrelated = ["The cafeteria serves lunch from noon until two.", "Meeting rooms can be booked in the calendar.",
                 "New employees get their badge on the first day."]

    def shares(q, zh, en, other):
        out = []
        for i, v in enumerate(q):
            base = sum(cosine(v, o) for o in other) / len(other)
            out.append((cosine(v, zh[i]) - base) / (cosine(v, en[i]) - base))
        return out

    centred = shares(await e.embed(questions, kind="query"), *[await e.embed(t) for t in (chinese, english, unrelated)])
    model = e.model()
    raw = shares(*[[list(map(float, v)) for v in rows] for rows in
                   (model.query(questions), model.passage(chinese), model.passage(english), model.passage(unrelated))])
    assert all(c > r for c, r in zip(centred, raw)), (centred, raw)
    assert sum(centred) / 3 > sum(raw) / 3 + 0.1, (centred, raw)
    assert max(raw) < 0.7  # the model alone: the other language reaches under 70 % of the margin


def test_e5_has_a_version_so_its_older_vectors_are_rebuilt():
    from xiajiao.vectors import identity

    assert identity(E5Small()) == "e5-small@centred-1"
    assert identity(HashEmbedder()) == "hash"

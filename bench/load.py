"""Bulk loading through the storage layer, into a data folder, before the server starts.

Messages go through :class:`xiajiao.db.Database` (the main database with the app's own
migrations) into ``messages`` and ``messages_fts`` (text prepared by
``xiajiao.text.index_text``), exactly the rows the chat core writes, in large transactions.
"""
from __future__ import annotations

import random
import time
from pathlib import Path

from xiajiao.app import MIGRATIONS
from xiajiao.db import Database, migrations_from_dir
from xiajiao.ids import new_id
from xiajiao.text import index_text

from .corpus import TextMaker

RARE_WORD = "quetzalcoatl"  # put into a handful of messages: the rare-word search
AUTHOR = "user_benchauthor"
AGENT = "agent_benchauthor"


def main_db(data_dir: Path) -> Database:
    return Database(Path(data_dir) / "xiajiao.db", label="xiajiao.db", migrations=migrations_from_dir(MIGRATIONS))


async def load_messages(data_dir: Path, count: int, *, rare_every: int = 50_000, batch: int = 20_000,
                        sample_every: int = 1000, log=None) -> dict:
    """One channel holding ``count`` messages (users and agent alternate), 1-3 corpus sentences each.

    Returns the channel id, a sample of message ids (every ``sample_every``-th) and how long it took.
    """
    db = main_db(data_dir)
    await db.open()
    text = TextMaker(seed=11)
    channel_id = new_id("ch")
    rare_every = max(1, min(rare_every, count // 5 or 1))
    t0 = time.perf_counter()
    base = time.time() - count  # one message a second, ending now
    await db.execute(
        "INSERT INTO channels (id, name, type, created_at, updated_at) VALUES (?, 'bench history', 'group', ?, ?)",
        (channel_id, "2020-01-01T00:00:00.000Z", "2020-01-01T00:00:00.000Z"))
    sample: list[str] = []
    rare = 0
    done = 0
    while done < count:
        n = min(batch, count - done)
        rows, bodies = [], []
        for i in range(done, done + n):
            content = text.message()
            if i % rare_every == rare_every // 2:
                content += f" {RARE_WORD}"
                rare += 1
            mid = new_id("msg")
            if i % sample_every == sample_every - 1:  # never the very first message (its page is empty)
                sample.append(mid)
            t = base + i
            created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".000Z"
            by_user = i % 2 == 0
            rows.append((mid, channel_id, AUTHOR if by_user else None, None if by_user else AGENT, content, created))
            bodies.append(index_text(content))

        def write(conn, rows=rows, bodies=bodies):
            first = conn.execute("SELECT COALESCE(MAX(seq), 0) AS s FROM messages").fetchone()["s"] + 1
            conn.executemany(
                "INSERT INTO messages (seq, id, channel_id, user_id, agent_id, content, type, metadata, status, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, 'text', '{}', 'done', ?)",
                ((first + k, *r) for k, r in enumerate(rows)))
            conn.executemany("INSERT INTO messages_fts (rowid, body) VALUES (?, ?)",
                             ((first + k, b) for k, b in enumerate(bodies)))

        await db.run_write(write)
        done += n
        if log:
            log(f"  loaded {done}/{count} messages")
    await db.execute("UPDATE channels SET last_message_at = ? WHERE id = ?",
                     (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z", channel_id))
    await db.run_write(lambda conn: conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('optimize')"))
    await db.close()
    random.Random(3).shuffle(sample)
    return {"channel_id": channel_id, "sample_ids": sample, "seconds": time.perf_counter() - t0, "rare": rare}

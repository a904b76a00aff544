"""Backup and restore of a whole data dir, taken while the server writes; channel export and import."""
from __future__ import annotations

import asyncio
import io
import json
import tarfile
from pathlib import Path

import pytest
from quart.datastructures import FileStorage

from chat_helpers import make_agent, make_channel, post, user_client
from conftest import OWNER_PASSWORD, login, make_settings, running_app
from test_memory import add_agent
from test_rag import ingest
from xiajiao import backup, chat, cli
from xiajiao.db.driver import connect_sync

DOC_EN = (b"# Returns policy\n\nCustomers may return unused items within thirty days. "
          b"Refunds are paid to the original card within five working days.\n")
DOC_ZH = "# 退货政策\n\n顾客可在三十天内退回未使用的商品。退款在五个工作日内退回原卡。\n".encode()
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8ff"
                    "ff3f0005fe02fea7d6a4a60000000049454e44ae426082")


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path, embedder="hash")


def rows(path: Path, table: str, key: str) -> dict:
    conn = connect_sync(path, readonly=True)
    try:
        return {r[key]: r for r in conn.execute(f"SELECT * FROM {table}")}
    finally:
        conn.close()


async def fill(app, owner) -> tuple[str, str, dict]:
    """An agent with memories and two documents, a channel with messages, one upload."""
    agent = await add_agent(app, "agent_keeper", "Keeper", knowledge=1)
    app.xj.workspace(agent["id"]).joinpath("SOUL.md").write_text("You keep things. 你保管东西。", encoding="utf-8")
    for fact in ("The office wifi password rotates every Monday", "王经理喜欢喝乌龙茶"):
        r = await owner.post(f"/api/agents/{agent['id']}/memories", json={"content": fact})
        assert r.status_code == 201, await r.get_data(as_text=True)
    assert (await ingest(owner, agent["id"], "returns.md", DOC_EN))["status"] == "ready"
    assert (await ingest(owner, agent["id"], "退货.md", DOC_ZH))["status"] == "ready"
    r = await owner.post("/api/upload", files={"file": FileStorage(io.BytesIO(PNG), filename="dot.png",
                                                                   content_type="image/png")})
    assert r.status_code == 200, await r.get_data(as_text=True)
    upload = await r.get_json()
    await make_agent(app)
    channel_id = await make_channel(owner)
    for i in range(20):
        await post(owner, channel_id, f"message {i} 消息")
    return agent["id"], channel_id, upload


async def test_a_backup_taken_while_messages_are_written_restores_row_by_row(app, owner, tmp_path):
    agent_id, channel_id, upload = await fill(app, owner)
    core = app.xj
    stop = asyncio.Event()
    written: list[str] = []

    async def writer():  # keeps writing while the backup runs
        n = 0
        while not stop.is_set() and n < 150:  # the listing below reads one page of 200
            msg = await chat.create_message(core, channel_id=channel_id, content=f"live {n}")
            written.append(msg["id"])
            n += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    while len(written) < 5:
        await asyncio.sleep(0.005)
    before = {r["id"] for r in await core.db.fetchall("SELECT id FROM messages")}
    r = await owner.post("/api/backups")
    assert r.status_code == 201, await r.get_data(as_text=True)
    made = (await r.get_json())["backup"]
    stop.set()
    await task
    assert len(written) > 5  # the writer really ran during the backup

    archive = core.backups.folder / made["name"]
    restored = tmp_path / "restored"
    out = backup.restore_backup(archive, restored)
    assert out["restored"] == made["files"]

    src, dst = core.data_dir, restored
    got = rows(dst / "xiajiao.db", "messages", "id")
    now = rows(src / "xiajiao.db", "messages", "id")
    assert before <= set(got)  # everything committed before the backup started is there
    assert all(now[i] == row for i, row in got.items())  # and every restored row is exactly the original
    for table, key in (("users", "id"), ("agents", "id"), ("channel_members", "member_id")):
        assert rows(dst / "xiajiao.db", table, key) == rows(src / "xiajiao.db", table, key)
    still = {k: {**v, "last_message_at": None} for k, v in rows(src / "xiajiao.db", "channels", "id").items()}
    assert {k: {**v, "last_message_at": None} for k, v in rows(dst / "xiajiao.db", "channels", "id").items()} == still
    ws_src, ws_dst = src / "workspaces" / agent_id, dst / "workspaces" / agent_id
    mem = rows(ws_dst / "memory.db", "memories", "id")
    assert len(mem) == 2 and mem == rows(ws_src / "memory.db", "memories", "id")
    docs = rows(ws_dst / "rag.db", "documents", "id")
    assert {d["name"] for d in docs.values()} == {"returns.md", "退货.md"}
    assert docs == rows(ws_src / "rag.db", "documents", "id")
    assert rows(ws_dst / "rag.db", "chunks", "id") == rows(ws_src / "rag.db", "chunks", "id")
    assert (ws_dst / "SOUL.md").read_text(encoding="utf-8") == "You keep things. 你保管东西。"
    rel = upload["url"].removeprefix("/uploads/")
    assert (dst / "uploads" / rel).read_bytes() == PNG
    assert not any(p.name.endswith(("-wal", "-shm")) for p in dst.rglob("*"))
    assert not (dst / "backups").exists()  # backups are not backed up into themselves

    # the restored folder is a working installation: the same password, the same messages, search works
    async with running_app(make_settings(tmp_path, data_dir=restored, embedder="hash")) as app2:
        c = app2.test_client()
        await login(c, OWNER_PASSWORD)
        r = await c.get("/api/messages", query_string={"channelId": channel_id, "limit": 200})
        listed = {m["id"] for m in (await r.get_json())["messages"]}
        assert listed == {i for i, row in got.items() if row["channel_id"] == channel_id}
        r = await c.get("/api/messages/search", query_string={"q": "消息"})
        assert (await r.get_json())["results"]
        r = await c.post("/api/rag/query", json={"agentId": agent_id, "query": "退款", "topK": 3})
        assert (await r.get_json())["results"][0]["documentName"] == "退货.md"


def _rewrite(archive: Path, target: Path, *, manifest=None, content=None) -> None:
    """Copy an archive, changing its manifest and/or the bytes of one member."""
    with tarfile.open(archive) as src, tarfile.open(target, "w:gz") as out:
        for member in src:
            data = src.extractfile(member).read()
            if member.name == backup.MANIFEST and manifest:
                data = json.dumps(manifest(json.loads(data))).encode()
            elif content and member.name == content[0]:
                data = content[1](data)
            member.size = len(data)
            out.addfile(member, io.BytesIO(data))


@pytest.fixture
async def archive(app, owner, tmp_path) -> Path:
    await fill(app, owner)
    return Path(backup.create_backup(app.xj.data_dir, tmp_path / "b.tar.gz")["path"])


def assert_untouched(folder: Path) -> None:
    assert not folder.exists()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".xiajiao-restore-")]


async def test_restore_refuses_a_newer_schema_and_changes_nothing(archive, tmp_path):
    newer = tmp_path / "newer.tar.gz"

    def bump(m):
        m["databases"]["xiajiao.db"]["migrations"].append(9999)
        return m

    _rewrite(archive, newer, manifest=bump)
    with pytest.raises(backup.BackupError) as err:
        backup.restore_backup(newer, tmp_path / "new-data")
    assert err.value.code == "backup_newer" and "9999" in err.value.message
    assert_untouched(tmp_path / "new-data")


async def test_restore_refuses_corrupt_truncated_and_tampered_archives(archive, tmp_path):
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"not an archive at all")
    tampered = tmp_path / "tampered.tar.gz"
    _rewrite(archive, tampered, content=("workspaces/agent_keeper/SOUL.md", lambda b: b + b"!"))
    for path, code in ((truncated, "backup_corrupt"), (garbage, "backup_corrupt"), (tampered, "backup_checksum")):
        with pytest.raises(backup.BackupError) as err:
            backup.restore_backup(path, tmp_path / "new-data")
        assert err.value.code == code, (path.name, err.value.message)
        assert_untouched(tmp_path / "new-data")


async def test_restore_into_a_non_empty_data_dir_is_refused(archive, tmp_path):
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(backup.BackupError) as err:
        backup.restore_backup(archive, target)
    assert err.value.code == "restore_not_empty"
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


async def test_the_cli_backs_up_and_restores(app, owner, tmp_path, capsys):
    await fill(app, owner)
    dest = tmp_path / "out"
    dest.mkdir()
    assert cli.main(["backup", str(dest), "--data-dir", str(app.xj.data_dir)]) == 0
    [made] = list(dest.glob("xiajiao-backup-*.tar.gz"))
    assert "backup written to" in capsys.readouterr().out
    assert cli.main(["restore", str(made), "--data-dir", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "xiajiao.db").is_file()
    assert cli.main(["restore", str(made), "--data-dir", str(tmp_path / "again")]) == 1  # not empty now
    assert "not empty" in capsys.readouterr().err


def test_retention_keeps_the_newest(tmp_path):
    for stamp in ("20260101-000000", "20260102-000000", "20260103-000000", "20260104-000000"):
        (tmp_path / f"xiajiao-backup-{stamp}.tar.gz").write_bytes(b"x")
    assert backup.prune_backups(tmp_path, 2) == ["xiajiao-backup-20260102-000000.tar.gz",
                                                 "xiajiao-backup-20260101-000000.tar.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["xiajiao-backup-20260103-000000.tar.gz",
                                                          "xiajiao-backup-20260104-000000.tar.gz"]


async def test_backup_routes_are_for_the_owner(app, owner):
    await fill(app, owner)
    r = await owner.post("/api/backups")
    assert r.status_code == 201
    name = (await r.get_json())["backup"]["name"]
    listing = await (await owner.get("/api/backups")).get_json()
    assert [b["name"] for b in listing["backups"]] == [name] and listing["last"]["name"] == name
    r = await owner.get(f"/api/backups/{name}")
    assert r.status_code == 200 and (await r.get_data())[:2] == b"\x1f\x8b"
    assert (await owner.get("/api/backups/..%2Fxiajiao.db")).status_code == 404
    admin, _ = await user_client(app, "adm", "admin")
    assert (await admin.post("/api/backups")).status_code == 403
    assert (await admin.get(f"/api/backups/{name}")).status_code == 403


async def test_export_as_markdown_and_json_and_import(app, owner):
    await make_agent(app)
    member, _ = await user_client(app, "mia")
    me = await (await member.get("/api/me")).get_json()
    channel_id = await make_channel(owner, name="发布计划", userIds=[me["user"]["id"]])
    await post(owner, channel_id, "第一条：周五发布")
    await post(member, channel_id, "Second: **bold** plan")

    r = await member.get(f"/api/channels/{channel_id}/export", query_string={"format": "md"})
    assert r.status_code == 200 and r.content_type.startswith("text/markdown")
    md = await r.get_data(as_text=True)
    assert md.startswith("# 发布计划") and "第一条：周五发布" in md and "Second: **bold** plan" in md
    assert md.index("第一条") < md.index("Second")

    r = await owner.get(f"/api/channels/{channel_id}/export")
    doc = await r.get_json()
    assert [m["content"] for m in doc["messages"]] == ["第一条：周五发布", "Second: **bold** plan"]
    assert doc["messages"][1]["author"]["name"] == "mia"

    r = await owner.post("/api/channels/import", json=doc)
    assert r.status_code == 201, await r.get_data(as_text=True)
    new_id = (await r.get_json())["id"]
    assert new_id != channel_id
    again = await (await owner.get(f"/api/channels/{new_id}/export")).get_json()
    assert [(m["author"]["id"], m["content"]) for m in again["messages"]] == \
        [(m["author"]["id"], m["content"]) for m in doc["messages"]]
    r = await owner.get("/api/messages/search", query_string={"q": "周五"})
    assert {x["channelId"] for x in (await r.get_json())["results"]} == {channel_id, new_id}

    for bad, code in (({"format": "other"}, "invalid_export"),
                      ({**doc, "formatVersion": 99}, "export_newer"),
                      ({**doc, "messages": [{"content": 3}]}, "invalid_export"),
                      ({**doc, "channel": {"name": "", "type": "group"}}, "invalid_export")):
        r = await owner.post("/api/channels/import", json=bad)
        assert (r.status_code, (await r.get_json())["code"]) == (400, code)
    assert (await member.post("/api/channels/import", json=doc)).status_code == 403
    r = await owner.get(f"/api/channels/{channel_id}/export", query_string={"format": "pdf"})
    assert (r.status_code, (await r.get_json())["code"]) == (400, "invalid_format")


async def test_who_may_export(app, owner):
    await make_agent(app)
    channel_id = await make_channel(owner)
    outsider, _ = await user_client(app, "out")
    guest, _ = await user_client(app, "gue", "guest")
    assert (await outsider.get(f"/api/channels/{channel_id}/export")).status_code == 404
    assert (await guest.get(f"/api/channels/{channel_id}/export")).status_code == 403
    admin, _ = await user_client(app, "adm", "admin")
    assert (await admin.get(f"/api/channels/{channel_id}/export")).status_code == 200


async def test_automatic_backups_run_every_interval_and_keep_the_newest(tmp_path):
    # 0.0001 hours: a backup every 0.36 s; two are kept
    async with running_app(make_settings(tmp_path, embedder="hash", backup_interval_hours=0.0001,
                                         backup_keep=2)) as app:
        owner = app.test_client()
        await login(owner)
        folder = app.xj.backups.folder
        assert not folder.exists() or list(folder.iterdir()) == []  # the first one comes an interval after start
        seen: set[str] = set()
        for _ in range(400):
            seen |= {p.name for p in folder.glob("*.tar.gz")} if folder.exists() else set()
            if len(seen) >= 3:
                break
            await asyncio.sleep(0.02)
        assert len(seen) >= 3, seen
        await asyncio.sleep(0.05)  # let a prune that raced the listing finish
        kept = sorted(p.name for p in folder.glob("*.tar.gz"))
        assert 1 <= len(kept) <= 2 and set(kept) <= seen
        listed = await (await owner.get("/api/backups")).get_json()
        assert {b["name"] for b in listed["backups"]} == set(kept)
        assert backup.read_manifest(folder / kept[-1])["files"]


async def test_a_failing_automatic_backup_is_reported_and_the_next_one_still_runs(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the backup folder should be")
    async with running_app(make_settings(tmp_path, embedder="hash", backup_interval_hours=0.0001,
                                         backup_dir=str(blocker))) as app:
        failures = []
        for _ in range(400):
            last = app.xj.backups.last
            if last and not last["ok"] and (not failures or last["createdAt"] != failures[-1]["createdAt"]):
                failures.append(dict(last))
            if len(failures) >= 2:
                break
            await asyncio.sleep(0.02)
        assert len(failures) >= 2 and failures[0]["error"]  # the loop went on after the first failure
        owner = app.test_client()
        await login(owner)
        resp = await owner.post("/api/backups")  # on demand: the same reason, as a 4xx
        assert (resp.status_code, (await resp.get_json())["code"]) == (400, "backup_folder")
        blocker.unlink()
        for _ in range(400):
            if app.xj.backups.last and app.xj.backups.last["ok"]:
                break
            await asyncio.sleep(0.02)
        assert app.xj.backups.last["ok"] and list(blocker.glob("*.tar.gz"))

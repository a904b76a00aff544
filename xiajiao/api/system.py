"""Operations routes: health, plugin list."""
from __future__ import annotations

import os

from quart import Blueprint, Response, jsonify

from ..auth import requires
from ..quart_app import current_app

bp = Blueprint("system", __name__)


@bp.get("/health")
@requires(None, limit=False)  # a load balancer's probe must never see 429
async def health():
    core = current_app.xj
    checks: dict[str, object] = {"database": "ok"}
    status = 200
    try:
        await core.db.check_writable()
    except Exception as exc:  # any failure of the probe is what health reports
        checks["database"] = f"error: {exc}"
        status = 503
    if core.engine is not None:  # circuit-breaker state per provider; an open breaker does not fail health
        checks["providers"] = {p["id"]: p["health"]["state"] for p in core.engine.gateway.provider_status()}
    return jsonify({"status": "ok" if status == 200 else "error", "version": core.version, "checks": checks}), status


def _file_sizes(folder) -> tuple[int, int]:
    """(bytes of SQLite files incl. their -wal, count of files) under ``folder``."""
    total = count = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.endswith((".db", ".db-wal")):
                try:
                    total += os.path.getsize(os.path.join(root, name))
                except OSError:  # removed while we walk
                    continue
                count += name.endswith(".db")
    return total, count


@bp.get("/api/system")
@requires("owner")
async def system():
    """What the owner needs to see at a glance: version, uptime, sizes, load, providers, backups."""
    import asyncio
    import platform
    import sys
    import time

    core = current_app.xj
    main = core.data_dir / "xiajiao.db"
    main_bytes = sum(p.stat().st_size for p in (main, main.with_name(main.name + "-wal")) if p.exists())
    ws_bytes, ws_files = await asyncio.to_thread(_file_sizes, core.data_dir / "workspaces")
    workspaces = core.data_dir / "workspaces"
    uploads_bytes = await asyncio.to_thread(
        lambda: sum(p.stat().st_size for p in core.uploads_dir.rglob("*") if p.is_file()) if core.uploads_dir.exists() else 0)
    engine = core.engine
    tasks = getattr(core, "tasks", None)
    counts = getattr(tasks, "counts", None)
    return jsonify({
        "version": core.version,
        "python": sys.version.split()[0],
        "platform": platform.platform(terse=True),
        "startedAt": core.started_at,
        "uptimeSeconds": round(time.time() - core.started_at, 1) if core.started_at else 0,
        "dataDir": str(core.data_dir),
        "databases": {"mainBytes": main_bytes, "workspaceBytes": ws_bytes, "workspaceFiles": ws_files,
                      "uploadsBytes": uploads_bytes},
        "workspaces": sum(1 for p in workspaces.iterdir() if p.is_dir()) if workspaces.exists() else 0,
        "agents": await core.db.fetchval("SELECT COUNT(*) FROM agents"),
        "users": await core.db.fetchval("SELECT COUNT(*) FROM users WHERE disabled = 0"),
        "connections": len(core.hub.connections),
        "openWorkspaceDatabases": core.workspaces.open_count(),
        "runningTurns": len(engine.running) if engine is not None else 0,
        "tasks": counts() if callable(counts) else None,
        "providers": [{"id": p["id"], "kind": p["kind"], "state": p["health"]["state"],
                       "calls": p["health"]["calls"], "failures": p["health"]["failures"]}
                      for p in (engine.gateway.provider_status() if engine is not None else [])],
        "backups": {"folder": str(core.backups.folder), "last": core.backups.last,
                    "intervalHours": core.settings.backup_interval_hours, "keep": core.settings.backup_keep},
    })


@bp.get("/-/plugins")
@requires("owner")
async def plugins():
    core = current_app.xj
    return jsonify({"plugins": core.describe_plugins()})


@bp.get("/metrics")
@requires("admin")
async def metrics():
    """Prometheus text format: requests, connections, open databases, memory."""
    core = current_app.xj
    lines = []

    def gauge(name: str, value: float, help_: str, labels: str = "") -> None:
        lines.append(f"# HELP xiajiao_{name} {help_}")
        lines.append(f"# TYPE xiajiao_{name} gauge")
        lines.append(f"xiajiao_{name}{{{labels}}} {value}" if labels else f"xiajiao_{name} {value}")

    lines.append("# HELP xiajiao_http_requests_total HTTP requests answered, by status class.")
    lines.append("# TYPE xiajiao_http_requests_total counter")
    for (name, label), value in sorted(core.metrics.items()):
        if name == "http_requests_total":
            lines.append(f"xiajiao_http_requests_total{{{label}}} {value}")
    gauge("websocket_connections", len(core.hub.connections), "Open WebSocket connections.")
    gauge("workspace_databases_open", core.workspaces.open_count(), "Agent databases currently open.")
    import psutil  # only the metrics page needs it: not imported at start

    gauge("resident_memory_bytes", psutil.Process(os.getpid()).memory_info().rss, "Resident memory of the server.")
    return Response("\n".join(lines) + "\n", content_type="text/plain; version=0.0.4")

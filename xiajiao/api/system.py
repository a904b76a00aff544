"""Operations routes: health, plugin list."""
from __future__ import annotations

import os

from quart import Blueprint, Response, current_app, jsonify

from ..auth import requires

bp = Blueprint("system", __name__)


@bp.get("/health")
@requires(None, limit=False)  # a load balancer's probe must never see 429
async def health():
    core = current_app.xj
    checks = {"database": "ok"}
    status = 200
    try:
        await core.db.check_writable()
    except Exception as exc:  # any failure of the probe is what health reports
        checks["database"] = f"error: {exc}"
        status = 503
    return jsonify({"status": "ok" if status == 200 else "error", "version": core.version, "checks": checks}), status


@bp.get("/-/plugins")
@requires("owner")
async def plugins():
    core = current_app.xj
    return jsonify({"plugins": core.plugins.describe(core.registries)})


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

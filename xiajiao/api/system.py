"""Operations routes: health, plugin list."""
from __future__ import annotations

from quart import Blueprint, current_app, jsonify

from ..auth import requires

bp = Blueprint("system", __name__)


@bp.get("/health")
@requires(None)
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

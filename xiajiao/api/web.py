"""The browser UI: the page shell, login and invite pages, the PWA manifest, the
service worker and the offline page. Every HTML page gets a strict
Content-Security-Policy (no inline script, no eval)."""
from __future__ import annotations

import json

from quart import Blueprint, g, redirect, render_template, request

from .. import auth
from ..app import WEB_DIR
from ..quart_app import current_app

bp = Blueprint("web", __name__)

LANGS = ("zh", "en")
I18N_DIR = WEB_DIR / "static" / "i18n"


def load_strings() -> dict[str, dict[str, str]]:
    """The UI strings of each language (the same files the browser loads)."""
    return {lang: json.loads((I18N_DIR / f"{lang}.json").read_text(encoding="utf-8")) for lang in LANGS}


def csp(host: str) -> str:
    """The policy of every HTML page. Styles may be inline because KaTeX and Mermaid
    position their output with style attributes and SVG <style>; scripts may not."""
    ws = f" ws://{host} wss://{host}" if host else ""
    return "; ".join([
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        f"connect-src 'self'{ws}",
        "worker-src 'self'",
        "manifest-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


@bp.record_once
def _prepare_jinja(state) -> None:
    app = state.app
    env = app.jinja_env
    strings = load_strings()
    env.globals["langs"] = LANGS
    env.globals["t"] = lambda lang, key: strings.get(lang, {}).get(key, key)
    app.xj.plugins.call_sync("prepare_jinja_env", env=env)


@bp.after_app_request
async def _html_headers(response):
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = csp(request.host)
        response.headers.setdefault("Cache-Control", "no-cache")
    return response


def _lang() -> str:
    wanted = request.cookies.get("lang") or (request.accept_languages.best_match(LANGS) or "")
    return wanted if wanted in LANGS else "zh"


async def _first_run() -> bool:
    """True until someone other than the owner exists or the owner has a session."""
    db = current_app.xj.db
    users = await db.fetchval("SELECT COUNT(*) FROM users")
    sessions = await db.fetchval("SELECT COUNT(*) FROM sessions")
    return users <= 1 and sessions == 0


def _boot(**extra) -> str:
    """Data the page script reads from a JSON <script> block (not executed)."""
    core = current_app.xj
    data = {"version": core.version, "lang": _lang()}
    data.update(extra)
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")


@bp.get("/")
@auth.requires(None)
async def shell():
    actor = g.actor
    if actor is None:
        return redirect("/login")
    return await render_template("app.html", lang=_lang(),
                                 boot=_boot(user={"id": actor.id, "role": actor.role}))


@bp.get("/login")
@auth.requires(None)
async def login_page():
    if g.actor is not None:
        return redirect("/")
    return await render_template("login.html", lang=_lang(), first_run=await _first_run(), boot=_boot())


@bp.get("/invite/<token>")
@auth.requires(None)
async def invite_page(token: str):
    state = await auth.invite_state(current_app.xj.db, token)
    html = await render_template("invite.html", lang=_lang(), boot=_boot(inviteToken=token), state=state)
    return html, 200 if state == "valid" else 410 if state in ("expired", "used", "revoked") else 404


@bp.get("/offline.html")
@auth.requires(None)
async def offline_page():
    return await render_template("offline.html", lang=_lang(), boot=_boot())


@bp.get("/manifest.webmanifest")
@auth.requires(None)
async def manifest():
    body = {
        "name": "Xiajiao 虾饺", "short_name": "Xiajiao", "start_url": "/", "scope": "/",
        "display": "standalone", "background_color": "#ffffff", "theme_color": "#e8603c",
        "description": "Self-hosted AI agent team",
        "icons": [
            {"src": "/static/icons/icon.svg", "sizes": "any", "type": "image/svg+xml", "purpose": "any"},
        ],
    }
    resp = current_app.response_class(json.dumps(body, ensure_ascii=False), mimetype="application/manifest+json")
    return resp


@bp.get("/sw.js")
@auth.requires(None)
async def service_worker():
    path = f"{current_app.static_folder}/js/sw.js"
    with open(path, encoding="utf-8") as fh:
        text = fh.read().replace("__VERSION__", current_app.xj.version)
    resp = current_app.response_class(text, mimetype="text/javascript")
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["Service-Worker-Allowed"] = "/"
    return resp

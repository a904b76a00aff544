"""The ``xiajiao`` command: serve, plugins, settings, and commands that plugins add."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys

from . import __version__
from .errors import PluginError, SettingsError, StartupError
from .settings import CORE, Setting, Settings, load_settings


def _parser(extra_commands=()) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xiajiao", description="Xiajiao: a self-hosted AI agent team.")
    p.add_argument("--version", action="version", version=f"xiajiao {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    s = sub.add_parser("serve", help="Serve the web app and API (the default).")
    s.add_argument("--host", help="Override XIAJIAO_HOST.")
    s.add_argument("--port", type=int, help="Override XIAJIAO_PORT.")
    s.add_argument("--data-dir", help="Override XIAJIAO_DATA_DIR.")
    pl = sub.add_parser("plugins", help="List loaded plugins, their versions, hooks and contributions.")
    pl.add_argument("--json", action="store_true", help="Print JSON.")
    st = sub.add_parser("settings", help="List every setting with its value (secrets masked) and help.")
    st.add_argument("--markdown", action="store_true", help="Print the README settings table.")
    b = sub.add_parser("backup", help="Write a consistent backup archive of the data dir (works while serving).")
    b.add_argument("dest", help="Archive file to write, or a folder to put a dated archive in.")
    b.add_argument("--data-dir", help="Override XIAJIAO_DATA_DIR.")
    r = sub.add_parser("restore", help="Restore a backup archive into an empty data dir.")
    r.add_argument("archive", help="Archive written by 'xiajiao backup'.")
    r.add_argument("--data-dir", help="Override XIAJIAO_DATA_DIR (must be empty or absent).")
    sub.add_parser("test", help="Run the test suite (python run.py test).")
    for cmd in extra_commands:
        sub.add_parser(cmd.name, help=cmd.help)
    return p


def _default(s: Setting) -> str:
    return "(generated)" if s.name == "owner_password" else (str(s.default) if s.default != "" else "(empty)")


def settings_table(settings: Settings) -> str:
    """The README's settings tables: the core's, then those the loaded plugins declare."""
    groups = settings.by_owner()
    lines = ["| Setting | Default | What it does |", "| --- | --- | --- |"]
    lines += [f"| `{s.env}` | `{_default(s)}` | {s.help} |" for s in groups.pop(CORE)]
    if groups:
        lines += ["", "Settings declared by plugins (through `register_settings`):", "",
                  "| Setting | Plugin | Default | What it does |", "| --- | --- | --- | --- |"]
        lines += [f"| `{s.env}` | `{plugin}` | `{_default(s)}` | {s.help} |"
                  for plugin, group in groups.items() for s in group]
    return "\n".join(lines)


def settings_lines(settings: Settings) -> list[str]:
    """``xiajiao settings``: every value (secrets masked), the plugins' under their plugin's name."""
    out = []
    for owner, group in settings.by_owner().items():
        if owner != CORE:
            out += ["", f"# {owner}"]
        out += [f"{s.name} = {settings.shown(s.name)!r}" for s in group]
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"xiajiao: {exc}", file=sys.stderr)
        return 2
    try:
        from .app import build_plugins, new_registries, resolve_settings

        plugins = build_plugins(settings)
        settings = resolve_settings(settings, plugins)
        commands = new_registries()["commands"]
        plugins.collect_sync("register_commands", commands)
    except (PluginError, SettingsError) as exc:
        print(f"xiajiao: {exc}", file=sys.stderr)
        return 2
    args, rest = _parser(list(commands)).parse_known_args(argv)
    command = args.command or "serve"

    if command == "serve":
        changes = {k: v for k, v in (("host", getattr(args, "host", None)), ("port", getattr(args, "port", None)),
                                     ("data_dir", getattr(args, "data_dir", None))) if v}
        try:
            if changes:
                settings = load_settings(**changes)
            from .server import serve

            asyncio.run(serve(settings))
        except (StartupError, SettingsError) as exc:
            print(f"xiajiao: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            pass
        return 0
    if command == "plugins":
        from .app import Xiajiao

        core = Xiajiao(settings, plugins)
        core.collect_registrations()
        described = core.describe_plugins()
        if args.json:
            print(json.dumps(described, ensure_ascii=False, indent=2))
        else:
            for p in described:
                print(f"{p['name']} {p['version'] or ''} ({p['source']})")
                print(f"    hooks: {', '.join(p['hooks'])}")
                for kind, names in p["registered"].items():
                    if kind != "settings":
                        print(f"    {kind}: {', '.join(names)}")
                if p.get("settings"):
                    print("    settings:")
                    for env, value in p["settings"].items():
                        print(f"        {env} = {value!r}")
        return 0
    if command == "settings":
        print(settings_table(settings) if args.markdown else "\n".join(settings_lines(settings)))
        return 0
    if command in ("backup", "restore"):
        from .backup import BackupError, create_backup, restore_backup

        data_dir = args.data_dir or settings.data_dir
        try:
            if command == "backup":
                out = create_backup(data_dir, args.dest)
                print(f"xiajiao: backup written to {out['path']} ({len(out['files'])} files, {out['bytes']} bytes)")
            else:
                out = restore_backup(args.archive, data_dir)
                print(f"xiajiao: restored {out['restored']} files from a backup of {out['createdAt']} "
                      f"into {out['dataDir']}")
        except BackupError as exc:
            print(f"xiajiao: {exc.message}", file=sys.stderr)
            return 1
        return 0
    if command == "test":
        import pytest

        return pytest.main(rest)
    cmd = commands.get(command)
    result = cmd.fn(rest)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""One-command launch of Xiajiao.

    python run.py            install what is missing (into ./.venv), then serve
    python run.py test       install the test extras too, then run the whole test suite
    python run.py check      install the test extras too, then run the static checks (ruff, mypy)
    python run.py --help     list the commands

The first run creates ./.venv and installs the project into it; later runs find it
ready (a stamp records what was installed) and start at once.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".xiajiao-installed"

HELP = """usage: python run.py [COMMAND] [ARGS...]

Commands:
  serve       serve the web app and API on http://127.0.0.1:18800 (the default)
  test        run the whole test suite (extra arguments go to pytest)
  check       run the static checks: ruff on the repository, mypy on xiajiao/ (see pyproject.toml)
  plugins     list loaded plugins, their versions, hooks and contributions
  settings    list every setting (--markdown prints the README table)
  backup      write a backup archive of the data dir (works while serving)
  restore     restore a backup archive into an empty data dir

Settings come from XIAJIAO_* environment variables; see README.md.
"""


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def wanted_stamp(extras: str) -> str:
    digest = hashlib.sha256(b"".join((ROOT / f).read_bytes() for f in ("pyproject.toml", "setup.py"))).hexdigest()[:16]
    return f"{digest} {extras} {sys.version_info[0]}.{sys.version_info[1]}"


def installed_ok(extras: str) -> bool:
    if not STAMP.exists():
        return False
    have = STAMP.read_text().split()
    want = wanted_stamp(extras).split()
    return have[0] == want[0] and (extras == "" or "test" in have[1:2])


def install(extras: str) -> None:
    if not venv_python().exists():
        print("xiajiao: creating .venv …", flush=True)
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    print("xiajiao: installing dependencies (first run only) …", flush=True)
    py = str(venv_python())
    target = f".[{extras}]" if extras else "."
    log = VENV / "install.log"
    with open(log, "w") as out:
        for cmd in ([py, "-m", "pip", "install", "--upgrade", "pip"], [py, "-m", "pip", "install", "-e", target]):
            if subprocess.call(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT) != 0:
                print(log.read_text()[-4000:], file=sys.stderr)
                raise subprocess.CalledProcessError(1, cmd)
    STAMP.write_text(wanted_stamp(extras or "-"))


def static_checks() -> int:
    """ruff, then mypy, configured in pyproject.toml; the first that fails ends the run."""
    for cmd in ([sys.executable, "-m", "ruff", "check", "."], [sys.executable, "-m", "mypy"]):
        print("xiajiao:", " ".join(cmd[2:]), flush=True)
        code = subprocess.call(cmd, cwd=ROOT)
        if code:
            return code
    return 0


def main() -> int:
    if sys.version_info < (3, 11):
        print(f"xiajiao needs Python 3.11 or newer; this is {sys.version.split()[0]}.", file=sys.stderr)
        return 1
    args = sys.argv[1:]
    if args and args[0] in ("-h", "--help", "help"):
        print(HELP)
        return 0
    extras = "test" if args[:1] in (["test"], ["check"]) else ""
    in_venv = Path(sys.prefix).resolve() == VENV.resolve()
    if not installed_ok(extras):
        try:
            install(extras)
        except subprocess.CalledProcessError as exc:
            print(f"xiajiao: installing failed ({' '.join(exc.cmd)}); the end of {VENV / 'install.log'} is above.",
                  file=sys.stderr)
            return 1
    if not in_venv:
        py = str(venv_python())
        if os.name == "nt":
            return subprocess.call([py, str(Path(__file__).resolve()), *args])
        os.execv(py, [py, str(Path(__file__).resolve()), *args])
    os.chdir(ROOT)
    if args[:1] == ["check"]:
        return static_checks()
    sys.path.insert(0, str(ROOT))
    from xiajiao.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())

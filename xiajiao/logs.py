"""Structured logging: one JSON object per line on stderr."""
from __future__ import annotations

import json
import logging
import sys
import time

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``2026-12-02T10:00:00.123Z INFO xiajiao.access request status=200 …`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        extra = " ".join(f"{k}={v}" for k, v in record.__dict__.items()
                         if k not in _STANDARD and not k.startswith("_") and v is not None)
        line = f"{ts} {record.levelname} {record.name} {record.getMessage()}" + (f" {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Log to stderr, one line per record, JSON (default) or text; called once when serving."""
    root = logging.getLogger()
    formatter = TextFormatter() if fmt == "text" else JsonFormatter()
    for h in root.handlers:
        if getattr(h, "_xiajiao", False):
            h.setFormatter(formatter)
            root.setLevel(level.upper())
            return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler._xiajiao = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # hypercorn's own access log is replaced by ours
    logging.getLogger("hypercorn.access").disabled = True

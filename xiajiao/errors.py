"""The small error vocabulary of Xiajiao, rendered in one place as JSON.

``{"error": "<human message>", "code": "<machine_code>"}`` with an HTTP status.
"""
from __future__ import annotations

from typing import Any


class XiajiaoError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str = "", code: str | None = None, *, status: int | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None):
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__
        if code:
            self.code = code
        if status:
            self.status = status
        self.headers = headers or {}
        self.extra = extra or {}

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, **self.extra}


class BadRequest(XiajiaoError):
    status = 400
    code = "bad_request"


class Unauthorized(XiajiaoError):
    status = 401
    code = "unauthorized"


class Forbidden(XiajiaoError):
    status = 403
    code = "forbidden"


class NotFound(XiajiaoError):
    status = 404
    code = "not_found"


class Conflict(XiajiaoError):
    status = 409
    code = "conflict"


class TooLarge(XiajiaoError):
    status = 413
    code = "too_large"


class UnsupportedMediaType(XiajiaoError):
    status = 415
    code = "unsupported_media_type"


class RateLimited(XiajiaoError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str = "Too many requests", retry_after: float = 1.0, **kw: Any):
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(message, headers={"Retry-After": str(seconds)}, extra={"retryAfter": seconds}, **kw)


class ProviderError(XiajiaoError):
    """A model provider failed (after retries and fallbacks)."""

    status = 502
    code = "provider_error"

    def __init__(self, message: str = "", code: str | None = None, *, retryable: bool = False,
                 retry_after: float | None = None, **kw: Any):
        super().__init__(message, code, **kw)
        self.retryable = retryable
        self.retry_after = retry_after


class Unavailable(XiajiaoError):
    status = 503
    code = "unavailable"


class SettingsError(Exception):
    """A setting has a value that cannot be used; the message says what to change."""


class StartupError(Exception):
    """The server cannot start; the message says why, in one line."""


class PluginError(StartupError):
    """A plugin failed to load or registered something invalid."""


# Machine codes for plain HTTP errors raised by the framework itself.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}

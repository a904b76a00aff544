"""The OpenAPI description at ``/openapi.json``: what quart-schema derives from the routes, plus
the error answers every route may give and the multipart bodies of the upload routes."""
from __future__ import annotations

from typing import Any

from quart_schema.openapi import OpenAPIProvider

ERROR_SCHEMA = {"type": "object", "required": ["error", "code"],
                "properties": {"error": {"type": "string"}, "code": {"type": "string"}}}
ERRORS = {"400": "Bad input", "401": "Not logged in", "403": "Not allowed (role, cross-site request)",
          "404": "Not found", "405": "Method not allowed", "409": "Conflict", "413": "Too large",
          "415": "Unsupported media type", "429": "Rate limited", "502": "A model provider failed"}
SUCCESS = {"get": ("200",), "delete": ("200",), "put": ("200",), "patch": ("200",), "post": ("200", "201", "202")}
MULTIPART = {
    "/api/upload": {"file": {"type": "string", "format": "binary"}},
    "/api/rag/upload": {"file": {"type": "string", "format": "binary"}, "agentId": {"type": "string"}},
}


class XiajiaoOpenAPI(OpenAPIProvider):
    def schema(self) -> dict[str, Any]:
        spec = super().schema()
        error = {"content": {"application/json": {"schema": ERROR_SCHEMA}}}
        for path, operations in spec.get("paths", {}).items():
            for method, operation in operations.items():
                if method not in SUCCESS:
                    continue
                responses = operation.setdefault("responses", {})
                if not any(code.startswith("2") for code in responses):
                    for code in SUCCESS[method]:
                        responses[code] = {"description": "Success",
                                           "content": {"application/json": {"schema": {"type": "object"}}}}
                for code, text in ERRORS.items():
                    responses.setdefault(code, {"description": text, **error})
                fields = MULTIPART.get(path)
                if fields and method == "post":
                    operation["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": {
                        "type": "object", "required": ["file"], "properties": fields}}}}
        return spec

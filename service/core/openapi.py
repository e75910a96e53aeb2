"""Declare every error a route can answer, so the OpenAPI schema is complete."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_DESCRIPTIONS = {
    401: "Missing, invalid or expired bearer token, or bad credentials",
    403: "Authenticated, but not allowed to act on this resource",
    404: "No such resource (or not yours)",
    409: "Conflicts with existing data",
    413: "Request body too large",
    422: "The request is malformed or fails validation",
    429: "Too many failed login attempts; see Retry-After",
    503: (
        "Database unavailable, pool exhausted, conflict retries exhausted or password "
        "hashing saturated; see Retry-After"
    ),
}


class ErrorBody(BaseModel):
    detail: Any


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}

"""The service's own OpenAPI schema as a validator: what a generated client would check."""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema_rs


async def openapi_of(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


def body_validator(
    openapi: dict[str, Any], method: str, path: str, media_type: str = "application/json"
) -> jsonschema_rs.Validator:
    """Validates a request body the way schemathesis does (jsonschema-rs, ECMA-262 regexes,
    formats checked)."""
    schema = openapi["paths"][path][method]["requestBody"]["content"][media_type]["schema"]
    root = {**schema, "components": openapi.get("components", {})}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service.core.db import Database
from service.core.errors import is_database_unavailable
from service.core.openapi import responses

router = APIRouter(tags=["health"])


class HealthStatus(BaseModel):
    status: str


@router.get("/livez", response_model=HealthStatus)
async def livez() -> HealthStatus:
    """The process is up and its event loop answers. Never touches the database."""
    return HealthStatus(status="ok")


@router.get("/readyz", response_model=HealthStatus, responses=responses(503))
async def readyz(request: Request) -> Response:
    """The database answers within the readiness timeout."""
    database: Database = request.app.state.database
    try:
        await database.ping(within_seconds=request.app.state.settings.readiness_timeout_seconds)
    except Exception as exc:
        if not is_database_unavailable(exc):
            raise
        return JSONResponse(
            {"detail": "database unavailable", "status": "unavailable"},
            status_code=503,
            headers={"Retry-After": str(request.app.state.settings.retry_after_seconds)},
        )
    return JSONResponse({"status": "ok"})

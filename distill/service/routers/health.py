"""`GET /healthz`: 200 without a token when the database answers."""

from fastapi import APIRouter
from sqlalchemy import text

from distill.service.deps import SessionDep
from distill.service.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, operation_id="checkHealth")
def healthz(session: SessionDep) -> dict[str, str]:
    session.execute(text("SELECT 1"))
    return {"status": "ok"}

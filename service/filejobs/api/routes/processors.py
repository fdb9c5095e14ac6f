"""``/v1/processors``: what the service can do to files."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from filejobs.api.auth import authenticate
from filejobs.api.deps import ServicesDep
from filejobs.api.problems import problem_docs
from filejobs.models import ProcessorInfo, ProcessorList

router = APIRouter(prefix="/v1/processors", tags=["processors"], dependencies=[Depends(authenticate)])


@router.get(
    "",
    response_model=ProcessorList,
    summary="The available processors",
    responses=problem_docs(401, 429),
)
async def list_processors(services: ServicesDep) -> ProcessorList:
    return ProcessorList(
        items=[
            ProcessorInfo(
                name=entry.processor.name,
                description=entry.processor.description,
                accepts=list(entry.processor.accepts),
                params_schema=entry.processor.Params.model_json_schema(),
            )
            for entry in services.registry
        ]
    )

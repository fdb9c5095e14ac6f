"""A JSON request body read after the caller is known: a route that declares its body as a
FastAPI parameter has it parsed (``400``/``422``) before its dependencies run, so a caller without
a valid key would learn about the body before hearing ``401``. Routes with a JSON body call
:func:`json_body` after authentication instead, and :func:`json_body_docs` documents it."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from filejobs.errors import BadRequest, PayloadTooLarge, Unprocessable

#: The largest JSON body read (a webhook's fields are a few KiB at most).
MAX_JSON_BODY = 64 * 1024

M = TypeVar("M", bound=BaseModel)


async def json_body(request: Request, model: type[M], *, max_bytes: int = MAX_JSON_BODY) -> M:
    """The body as ``model``: ``413`` past ``max_bytes`` (default :data:`MAX_JSON_BODY`), ``400``
    when it is not JSON, ``422`` (naming each error) when it does not fit the model."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"The JSON body is over {max_bytes} bytes.")
    try:
        return model.model_validate_json(bytes(body))
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        if any(err["type"] == "json_invalid" for err in errors):
            raise BadRequest("The body is not valid JSON.") from None
        details = [
            {"loc": [str(p) for p in err["loc"]], "msg": err["msg"], "type": err["type"]} for err in errors
        ]
        raise Unprocessable("The request body is not valid.", errors=details) from None


def json_body_docs(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the required JSON body (the schemas of nested
    models inlined: a ``$ref`` to ``#/$defs/…`` would point nowhere in the OpenAPI document)."""
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(schema, schema.pop("$defs", {}))}},
        }
    }


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(value, defs) for value in node]
    return node

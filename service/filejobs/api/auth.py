"""Who is calling: ``Authorization: Bearer <key>`` on every ``/v1`` request once keys exist.

An open service (no key made, ``FILEJOBS_REQUIRE_AUTH`` off) serves the anonymous caller; as soon
as one key exists, a request without a valid key gets ``401`` with ``WWW-Authenticate``. Each
caller is then rate-limited (per key, per process).
"""

from __future__ import annotations

import logging
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, Request

from filejobs import keys
from filejobs.api.deps import ServicesDep
from filejobs.db import Database
from filejobs.errors import Unauthorized
from filejobs.keys import ANONYMOUS, AuthGate, Caller
from filejobs.services import Services

log = logging.getLogger(__name__)
REALM = 'Bearer realm="filejobs"'


def _challenge(error: str | None = None) -> dict[str, str]:
    value = REALM if error is None else f'{REALM}, error="{error}"'
    return {"WWW-Authenticate": value}


def _resolve(services_db: Database, gate: AuthGate, header: str | None) -> Caller:
    if header:
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "Send the API key as 'Authorization: Bearer <key>'.", headers=_challenge("invalid_request")
            )
        key = keys.find_key(services_db, token)
        if key is None:
            raise Unauthorized(
                "The API key is not valid (unknown or revoked).", headers=_challenge("invalid_token")
            )
        return Caller(key_id=key.id, name=key.name)
    if gate.required():
        raise Unauthorized(
            "This service needs an API key: send 'Authorization: Bearer <key>'.", headers=_challenge()
        )
    return ANONYMOUS


def open_without_lookup(gate: AuthGate, header: str | None) -> bool:
    """True when the caller is anonymous (no ``Authorization``) and the service is known to be
    open without asking the database: then no thread hop is needed to know who is calling."""
    return not header and gate.known() is False


async def anonymous_and_open(gate: AuthGate, header: str | None) -> bool:
    """True when the caller is anonymous and the service open: known in memory, or (once the
    answer is a second old) read in a thread shared by every request asking meanwhile. False when
    a key is sent, keys are required, or the read failed (the route answers, and meets the same
    failure). For the fast paths, which answer anonymous callers of an open service themselves."""
    if header:
        return False
    known = gate.known()
    if known is not None:
        return not known
    try:
        return not await gate.arequired()
    except Exception:
        log.debug("reading whether keys are required failed; the route answers", exc_info=True)
        return False


async def authenticate(request: Request, services: ServicesDep) -> Caller:
    header = request.headers.get("authorization")
    if open_without_lookup(services.auth, header):
        caller = ANONYMOUS
    else:
        caller = await to_thread.run_sync(_resolve, services.db, services.auth, header)
    if caller.key_id is not None:
        services.rate_limiter.check(caller.scope)
    request.state.caller = caller
    return caller


async def check_still_allowed(services: Services, caller: Caller) -> None:
    """401 when ``caller``, let in when the request began, no longer would be: its key has been
    revoked since (or, anonymous, a first key has been made). For a long request's last step."""
    if caller.key_id is None:
        if open_without_lookup(services.auth, None) or not await to_thread.run_sync(services.auth.required):
            return
        raise Unauthorized(
            "This service needs an API key now: send 'Authorization: Bearer <key>'.", headers=_challenge()
        )
    if not await to_thread.run_sync(keys.active_key_ids, services.db, {caller.key_id}):
        raise Unauthorized(
            "The API key was revoked while this request was in progress.",
            headers=_challenge("invalid_token"),
        )


CallerDep = Annotated[Caller, Depends(authenticate)]

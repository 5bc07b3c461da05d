"""HTTP for photos and documents added to enquiries: a reader of the enquiry fetches one, and
a back-office fetches one by the signed link it was sent (Open311's media_url)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from app.api.auth import check_scope
from app.api.deps import READERS, Attachments, Engine, Now, OptionalCaller, Sealer
from app.api.problems import documented_problems
from app.api.ratelimit import RATE_LIMITED_RESPONSE
from app.attachments.reading import ServedFile, read_attachment, read_signed
from app.clients.service import Scope

router = APIRouter(tags=["attachments"], responses={429: RATE_LIMITED_RESPONSE})

_FILE = {
    "description": "The file as the gateway keeps it: an image re-encoded without its "
    "metadata, or a PDF",
    "content": {
        media: {"schema": {"type": "string", "format": "binary"}}
        for media in ("image/jpeg", "image/png", "image/webp", "image/gif", "application/pdf")
    },
}


def file_answer(served: ServedFile) -> Response:
    """The file to save, never to render in the gateway's origin, and never to cache. (Every
    answer has X-Content-Type-Options: nosniff and CSP default-src 'none' already, from
    app.api.middleware.SecurityHeaders: a browser takes the type as given.)"""
    return Response(
        served.content,
        media_type=served.content_type,
        headers={
            "Content-Disposition": f"attachment; filename={served.filename}",
            "Cache-Control": "private, no-store",
        },
    )


@router.get(
    "/v1/attachments/{attachment_id}",
    summary="Fetch an attachment by its signed link",
    response_class=Response,
    responses={
        200: _FILE,
        **documented_problems(
            {
                403: "The signature is not valid for this file, or the link has expired",
                404: "The attachment is no longer kept (its enquiry's data was erased)",
                422: "Not an attachment id, or an expiry that is not a number",
            }
        ),
    },
)
async def fetch_signed(
    attachment_id: uuid.UUID,
    engine: Engine,
    store: Attachments,
    sealer: Sealer,
    now: Now,
    expires: Annotated[
        int | None, Query(ge=0, le=2**40, description="When the link stops working (Unix time)")
    ] = None,
    signature: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    """The link a back-office was given for a photo or document (Open311 `media_url`): no API
    key, only the signature, until `expires`. A link whose signature is wrong or whose time
    is up is refused (403) before anything is looked up."""
    served = await read_signed(
        engine=engine,
        store=store,
        sealer=sealer,
        attachment_id=attachment_id,
        expires=expires,
        signature=signature,
        now=now,
    )
    return file_answer(served)


@router.get(
    "/v1/enquiries/{reference}/attachments/{attachment_id}",
    summary="Fetch one of an enquiry's photos or documents",
    tags=["enquiries"],
    response_class=Response,
    responses={
        200: _FILE,
        **documented_problems(
            {
                401: "No valid API key, and no token",
                404: "No such enquiry or attachment (or not yours, or the token is wrong)",
                422: "Not a valid reference or attachment id",
            },
            lacks="enquiries:read and enquiries:read-all",
        ),
    },
)
async def read_enquiry_attachment(
    reference: Annotated[str, Path(max_length=32, examples=["K7Q-M4X-PB6"])],
    attachment_id: uuid.UUID,
    engine: Engine,
    store: Attachments,
    sealer: Sealer,
    caller: OptionalCaller,
    token: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            description="The citizen's access token: their own enquiry's files, without a key.",
        ),
    ] = None,
) -> Response:
    """A photo or document of an enquiry, for whoever may read the enquiry: staff with
    `enquiries:read-all` (a partner's staff, enquiries their organisation has a part of), the
    client that submitted it with `enquiries:read`, or the citizen with `token`. Each read
    with an API key is written to the audit log. Anything else is answered 404, exactly like
    an attachment that does not exist."""
    if token is not None:
        served = await read_attachment(
            engine=engine,
            store=store,
            sealer=sealer,
            reference=reference,
            attachment_id=attachment_id,
            token=token,
        )
        return file_answer(served)
    reader = check_scope(caller, READERS)
    served = await read_attachment(
        engine=engine,
        store=store,
        sealer=sealer,
        reference=reference,
        attachment_id=attachment_id,
        reader=reader,
        client_id=None if reader.allows(Scope.enquiries_read_all) else reader.client_id,
    )
    return file_answer(served)

"""HTTP for the unsubscribe link of messages to the citizen: no API key (the link's signature
is the proof), counted per address like every call without one. GET shows what the link
would stop and a button (plain HTML, no script); POST stops it, as the button or a mail
client's one-click unsubscribe (RFC 8058: a form body `List-Unsubscribe=One-Click`) sends."""

from __future__ import annotations

import html
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from app.alerts import unsubscribe
from app.alerts.sender import UNSUBSCRIBE_PATH
from app.api.deps import Engine, Now, Sealer
from app.api.problems import documented_problems
from app.api.ratelimit import RATE_LIMITED_RESPONSE, limit_address

router = APIRouter(
    tags=["alerts"],
    dependencies=[Depends(limit_address)],
    responses={429: RATE_LIMITED_RESPONSE},
)
_PROBLEMS = documented_problems(
    {
        403: "The signature is not this enquiry's",
        404: "The enquiry is no longer held",
        422: "No enquiry id or signature",
    }
)
EnquiryId = Annotated[uuid.UUID, Query(alias="enquiry", description="The enquiry's id")]
Signature = Annotated[
    str, Query(min_length=1, max_length=64, description="The link's signature, as sent")
]
_HTML: dict[str, Any] = {"content": {"text/html": {}}}


@router.get(
    UNSUBSCRIBE_PATH,
    response_class=HTMLResponse,
    summary="Show what an unsubscribe link stops",
    responses={200: _HTML, **_PROBLEMS},
)
async def unsubscribe_page(
    enquiry: EnquiryId, signature: Signature, engine: Engine, sealer: Sealer
) -> HTMLResponse:
    """A page naming the enquiry, with a button that stops its messages (nothing is stopped
    by opening the link: mail scanners open links)."""
    found = await unsubscribe.subscription(engine, sealer, enquiry_id=enquiry, signature=signature)
    return HTMLResponse(_page(found, enquiry, signature))


@router.post(
    UNSUBSCRIBE_PATH,
    response_class=HTMLResponse,
    summary="Stop the messages about an enquiry",
    responses={200: _HTML, **_PROBLEMS},
)
async def unsubscribe_now(
    enquiry: EnquiryId, signature: Signature, engine: Engine, sealer: Sealer, now: Now
) -> HTMLResponse:
    """Stop every message about this enquiry; the same again changes nothing. Any body is
    ignored (RFC 8058 sends `List-Unsubscribe=One-Click`)."""
    stopped = await unsubscribe.stop_alerts(
        engine, sealer, enquiry_id=enquiry, signature=signature, now=now
    )
    return HTMLResponse(_page(stopped, enquiry, signature))


def _page(found: unsubscribe.Subscription, enquiry: uuid.UUID, signature: str) -> str:
    reference = html.escape(found.reference)
    if found.stopped_at is not None:
        said = f"<p>You will not be sent any more messages about enquiry {reference}.</p>"
        return _PAGE.format(reference=reference, body=said)
    action = html.escape(f"{UNSUBSCRIBE_PATH}?enquiry={enquiry}&signature={signature}")
    said = (
        f"<p>Stop the messages about enquiry {reference}?</p>"
        f'<form method="post" action="{action}"><button type="submit">Stop messages</button>'
        "</form>"
    )
    return _PAGE.format(reference=reference, body=said)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Messages about {reference}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><h1>Messages about your enquiry {reference}</h1>
{body}
</body></html>
"""

"""The SMTP sink: an aiosmtpd server on 127.0.0.1 that keeps every message, and pages to read them.

Every message is parsed and kept in `office.mail` (repeats too, flagged `duplicate` when its
Message-ID came before). A message to a recipient listed by an organisation whose adapter type
is "email" also opens a case for that organisation (dedupe key: the Message-ID without angle
brackets, which is also the case id), with the reference from X-IAP-Reference and the
description and citizen from the enquiry-<reference>.json attachment. Behaviour applies as
elsewhere (the recipient's organisation, else "*"): down → 421, fail → 451, timeout → kept, then
the 250 held back.

A reply (In-Reply-To naming the Message-ID of a case's first message, as the email adapter's
follow-ups are) opens no case: it is filed on the case it answers as a follow-up (office.py),
keyed on its own Message-ID, of the kind its X-IAP-Follow-Up header names (information,
withdrawal, reopening; information if it names none), with its text and each attached file.
A repeated Message-ID adds nothing; a reply to no case we hold is only kept.

GET /mail is a plain HTML page listing the messages; GET /mail.json the same as JSON.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller
from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse

from app.sandbox import faults
from app.sandbox.core import Sandbox, SandboxDep
from app.sandbox.files import file_record
from app.sandbox.office import BackOffice, utc_now

router = APIRouter()
SMTP_HOST = "127.0.0.1"
# aiosmtpd's logger: it writes each line of a message at DEBUG (the citizen's name, email and
# phone in a police email) and every connection's opening and closing at INFO (the controller's
# own check at start-up included); only its warnings are worth an operator's eye.
SMTP_LOGGER = "mail.log"
FOLLOW_UP_KINDS = ("information", "withdrawal", "reopening")


class MailSink:
    """aiosmtpd handler: hands each message to the sandbox's own event loop to record."""

    def __init__(self, sandbox: Sandbox, loop: asyncio.AbstractEventLoop) -> None:
        self.sandbox = sandbox
        self.loop = loop

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Record the message (in the sandbox's loop, where everything else is recorded)."""
        work = receive(self.sandbox, envelope.mail_from, list(envelope.rcpt_tos), envelope.content)
        recorded = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self.loop))
        # A message whose data has all arrived is kept even if the client then goes away,
        # as a real mail server keeps it: that is how a sender comes to send it twice.
        return await asyncio.shield(recorded)


async def start_sink(sandbox: Sandbox, port: int) -> Controller:
    """Listen for SMTP on 127.0.0.1:port, in a thread of its own, once it answers."""
    logging.getLogger(SMTP_LOGGER).setLevel(logging.WARNING)
    controller = Controller(
        MailSink(sandbox, asyncio.get_running_loop()), hostname=SMTP_HOST, port=port
    )
    await asyncio.to_thread(controller.start)
    return controller


async def receive(sandbox: Sandbox, mail_from: str, rcpt_tos: list[str], content: bytes) -> str:
    """Keep one message; the SMTP reply to give. Counted in flight like an HTTP request."""
    sandbox.in_flight += 1
    try:
        return await _receive(sandbox, mail_from, rcpt_tos, content)
    finally:
        sandbox.in_flight -= 1


async def _receive(sandbox: Sandbox, mail_from: str, rcpt_tos: list[str], content: bytes) -> str:
    message = BytesParser(policy=policy.default).parsebytes(content)
    assert isinstance(message, EmailMessage)  # policy.default parses to EmailMessage
    message_id = _bare(message.get("Message-ID")) or None
    organisation = _organisation_for(sandbox, rcpt_tos)
    office = sandbox.office
    answered = _answered_case(office, organisation, message)
    if organisation is not None and not message.get("In-Reply-To"):
        office.count_create(organisation, message_id)
    scope = organisation or "*"
    fault = await faults.arrive(office, scope)
    if fault is not None:
        if answered is not None:  # a reply that arrives is counted as it is filed
            _count_follow_up(office, answered, message_id)
        return "421 Service not available" if fault.down else "451 Try again later"
    entry = _entry(sandbox, message, message_id, organisation, mail_from, rcpt_tos)
    office.mail.append(entry)
    if answered is not None:
        _file_follow_up(office, answered, message, entry)
    elif message.get("In-Reply-To"):
        pass  # a reply to no case held here: kept, and nothing more
    elif organisation is not None and (organisation, message_id or "") not in office.by_key:
        sandbox.open_case(_case(entry, office.take_number()))
    await faults.hold(office, scope)
    return f"250 OK queued as {entry['number']}"


def _bare(header: Any) -> str:
    """A Message-ID header's id without its angle brackets."""
    return str(header or "").strip().strip("<>")


def _answered_case(
    office: BackOffice, organisation: str | None, message: EmailMessage
) -> dict[str, Any] | None:
    """The case whose first message this one replies to, if this organisation holds it."""
    if organisation is None or not message.get("In-Reply-To"):
        return None
    case_id = office.by_key.get((organisation, _bare(message.get("In-Reply-To"))))
    return office.case(organisation, case_id) if case_id else None


def _count_follow_up(office: BackOffice, case: dict[str, Any], message_id: str | None) -> None:
    """Count a reply the behaviour refused, as record_follow_up counts those it files."""
    slot = (case["organisation"], message_id or "")
    office.follow_up_posts[slot] = office.follow_up_posts.get(slot, 0) + 1


def _file_follow_up(
    office: BackOffice, case: dict[str, Any], message: EmailMessage, entry: dict[str, Any]
) -> None:
    """File the reply on its case: its kind, text and files (a repeat adds nothing)."""
    kind = str(message.get("X-IAP-Follow-Up", "")).strip().lower()
    files = [
        file_record(_content(part), part.get_content_type(), filename=part.get_filename())
        for part in message.iter_attachments()
    ]
    received = {k: entry[k] for k in ("from", "to", "subject")} | {
        "in_reply_to": _bare(message.get("In-Reply-To")),
        "references": str(message.get("References", "")),
    }
    follow_up = {
        "key": entry["message_id"] or "",
        "kind": kind if kind in FOLLOW_UP_KINDS else "information",
        "text": entry["text"],
        "status": None,
        "attachments": files,
        "received": received,
    }
    office.record_follow_up(case, follow_up)


def _content(part: EmailMessage) -> bytes:
    """A part's content as the bytes that were sent."""
    content = part.get_content()
    return content.encode() if isinstance(content, str) else bytes(content)


def _organisation_for(sandbox: Sandbox, rcpt_tos: list[str]) -> str | None:
    if sandbox.catalogue is None:
        return None
    wanted = {r.lower() for r in rcpt_tos}
    for organisation in sandbox.catalogue.organisations.values():
        recipients = (organisation.adapter.model_extra or {}).get("recipients") or []
        if organisation.adapter.type == "email" and wanted & {str(r).lower() for r in recipients}:
            return organisation.id
    return None


def _entry(
    sandbox: Sandbox,
    message: EmailMessage,
    message_id: str | None,
    organisation: str | None,
    mail_from: str,
    rcpt_tos: list[str],
) -> dict[str, Any]:
    seen = message_id is not None and any(
        m["message_id"] == message_id for m in sandbox.office.mail
    )
    body = message.get_body(preferencelist=("plain",))
    attachments = [_attachment(part) for part in message.iter_attachments()]
    return {
        "number": len(sandbox.office.mail) + 1,
        "organisation": organisation,
        "envelope_from": mail_from,
        "envelope_to": rcpt_tos,
        "from": str(message.get("From", "")),
        "to": str(message.get("To", "")),
        "subject": str(message.get("Subject", "")),
        "message_id": message_id,
        "reference": str(message.get("X-IAP-Reference", "")) or None,
        "received_at": utc_now(),
        "duplicate": seen,
        "text": body.get_content() if isinstance(body, EmailMessage) else "",
        "attachments": attachments,
    }


def _attachment(part: EmailMessage) -> dict[str, Any]:
    raw = _content(part)
    found: dict[str, Any] = {
        "filename": part.get_filename(),
        "content_type": part.get_content_type(),
        "size": len(raw),
    }
    if part.get_content_type() == "application/json":
        try:
            found["json"] = json.loads(raw)
        except ValueError:
            found["json"] = None
    return found


def _case(entry: dict[str, Any], number: int) -> dict[str, Any]:
    data: dict[str, Any] = next(
        (a["json"] for a in entry["attachments"] if isinstance(a.get("json"), dict)), {}
    )
    case: dict[str, Any] = {
        "id": entry["message_id"] or f"MAIL-{number:06d}",
        "organisation": entry["organisation"],
        "protocol": "email",
        "reference": entry["reference"] or data.get("reference"),
        "service_code": data.get("service_code"),
        "description": data.get("description"),
        "dedupe_key": entry["message_id"],
        "received": {k: entry[k] for k in ("from", "to", "subject", "text")} | {"json": data},
        "status": "received",
    }
    if data.get("citizen"):
        case["citizen"] = data["citizen"]
    return case


@router.get("/mail.json")
async def mail_json(sandbox: SandboxDep) -> dict[str, Any]:
    """Every message the sink accepted, oldest first."""
    return {"messages": jsonable_encoder(sandbox.office.mail)}


@router.get("/mail", response_class=HTMLResponse)
async def mail_page(sandbox: SandboxDep) -> HTMLResponse:
    """A page a person can read: one row per message, repeats flagged."""
    rows = "\n".join(_row(entry) for entry in reversed(sandbox.office.mail))
    empty = "" if rows else '<tr><td colspan="7">No mail yet.</td></tr>'
    return HTMLResponse(PAGE.format(count=len(sandbox.office.mail), rows=rows or empty))


def _row(entry: dict[str, Any]) -> str:
    cells = [
        str(entry["number"]),
        entry["received_at"].strftime("%Y-%m-%d %H:%M:%S"),
        entry["from"],
        entry["to"],
        entry["subject"],
        f"<{entry['message_id']}>" if entry["message_id"] else "",
    ]
    flag = '<td class="dup">duplicate</td>' if entry["duplicate"] else "<td></td>"
    tds = "".join(f"<td>{html.escape(cell)}</td>" for cell in cells)
    css = ' class="repeat"' if entry["duplicate"] else ""
    return f"<tr{css}>{tds}{flag}</tr>"


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sandbox mail ({count})</title>
<meta http-equiv="refresh" content="10">
<style>body{{font-family:sans-serif}} td,th{{padding:2px 8px;text-align:left}}
.repeat{{color:#a00}} .dup{{font-weight:bold}}</style></head>
<body><h1>Mail received by the sandbox ({count})</h1>
<table><thead><tr><th>#</th><th>Received (UTC)</th><th>From</th><th>To</th><th>Subject</th>
<th>Message-ID</th><th></th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""

"""HTTP for the conversation after submission: add information (text, photos, documents),
withdraw, reopen, and staff notes. Parse, call app.conversation.service, answer."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ConfigDict, Field, StringConstraints, ValidationError
from starlette.datastructures import UploadFile

from app.api.auth import check_scope
from app.api.deps import OptionalCaller, State
from app.api.problems import documented_problems
from app.api.ratelimit import RATE_LIMITED_RESPONSE
from app.attachments.files import read_uploads
from app.clients.service import Caller, Scope
from app.conversation import service
from app.conversation.service import Conversation, Speaker
from app.core.errors import ValidationFailed
from app.core.settings import AttachmentSettings
from app.core.types import NoNul, Strict
from app.intake.schemas import MessageOut

router = APIRouter(
    prefix="/v1/enquiries", tags=["conversation"], responses={429: RATE_LIMITED_RESPONSE}
)
MAX_TEXT = 5000
MAX_REASON = 2000
MULTIPART = "multipart/form-data"
# Who may speak with a key: the client that submitted the enquiry, or staff.
SPEAKERS = (Scope.enquiries_submit, Scope.enquiries_read_all)

Reference = Annotated[str, Path(max_length=32, examples=["K7Q-M4X-PB6"])]
Token = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=100,
        description="The citizen's access token from the 201 answer of the submission: no API "
        "key is needed.",
    ),
]
Said = Annotated[NoNul, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT)]
Why = Annotated[NoNul, StringConstraints(strip_whitespace=True, max_length=MAX_REASON)]


class InformationIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"text": "It is on the north side, by the bus stop"}]}
    )

    text: Said = Field(examples=["It is on the north side, by the bus stop"])


class ReasonIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"reason": "It was fixed this morning"}]}
    )

    reason: Why | None = Field(default=None, examples=["It was fixed this morning"])


class NoteIn(Strict):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"text": "Caller rang again; told them it is with the council"}]
        }
    )

    text: Said = Field(examples=["Caller rang again; told them it is with the council"])


async def _conversation(state: State) -> Conversation:
    return Conversation(
        engine=state.engine,
        catalogue=state.catalogue,
        sealer=state.sealer,
        store=state.attachments,
        settings=state.settings,
        wake_follow_ups=state.wake_follow_ups,
    )


Talk = Annotated[Conversation, Depends(_conversation)]


def _speaker(caller: Caller | None, token: str | None) -> Speaker:
    """The citizen with their token (a key sent as well is not needed), else an API caller
    that submits enquiries (its own) or reads every enquiry (staff)."""
    if token is not None:
        return Speaker(token=token)
    return Speaker(caller=check_scope(caller, SPEAKERS))


_WHO = "the scope enquiries:submit (the client's own enquiries) or enquiries:read-all"
_COMMON = {
    401: "No valid API key, and no token",
    404: "No such enquiry (or not yours, or the token is wrong)",
    409: "The enquiry's state does not allow it (withdrawn, closed, erased)",
}


@router.post(
    "/{reference}/information",
    status_code=201,
    response_model=MessageOut,
    summary="Add information, photos or documents to an enquiry",
    responses=documented_problems(
        {
            **_COMMON,
            400: "The body could not be read",
            409: "The enquiry is over, or it would hold more files than an enquiry keeps",
            413: "A file, or the body, is too large, or there are too many files",
            415: "A file is not a photo or PDF, or the body is neither JSON nor a form",
            422: "Neither text nor files, or a file that does not open",
        },
        lacks=_WHO,
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": InformationIn.model_json_schema()},
                MULTIPART: {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "text": {"type": "string", "maxLength": MAX_TEXT},
                            "files": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                # The shipped limit (IAP_ATTACHMENTS__MAX_FILES can change it).
                                "maxItems": AttachmentSettings().max_files,
                            },
                        },
                        # Any other field is refused (422), as the JSON body's are.
                        "additionalProperties": False,
                    }
                },
            },
        }
    },
)
async def add_information(
    reference: Reference, request: Request, talk: Talk, caller: OptionalCaller, token: Token = None
) -> MessageOut:
    """More detail for the organisations working the enquiry: `{"text": ...}` as JSON, or a
    form (multipart/form-data) with `text` and up to `attachments.max_files` `files`
    (photos: JPEG, PNG, WebP, GIF; documents: PDF). Photos are re-encoded, so no EXIF (a
    phone's GPS position) is kept or sent. Each organisation whose part is still open is sent
    it. The citizen calls it with `?token=`; the client that submitted the enquiry and staff
    with `enquiries:read-all` with their key."""
    speaker = _speaker(caller, token)
    if _is_form(request):
        text, files = await _form(request, talk)
    else:
        text, files = (await _json(request, InformationIn)).text, []
    return await service.add_information(
        talk, reference=reference, speaker=speaker, text=text, files=files
    )


@router.post(
    "/{reference}/withdraw",
    status_code=201,
    response_model=MessageOut,
    summary="Withdraw an enquiry",
    responses=documented_problems({**_COMMON, 422: "The reason is not valid"}, lacks=_WHO),
)
async def withdraw(
    reference: Reference, body: ReasonIn, talk: Talk, caller: OptionalCaller, token: Token = None
) -> MessageOut:
    """Call the enquiry off ("it was fixed", "sorted it myself"): deliveries not yet made are
    cancelled, and each organisation holding it is told. Its status becomes `withdrawn`."""
    return await service.withdraw(
        talk, reference=reference, speaker=_speaker(caller, token), reason=body.reason
    )


@router.post(
    "/{reference}/reopen",
    status_code=201,
    response_model=MessageOut,
    summary="Reopen a resolved or closed enquiry",
    responses=documented_problems({**_COMMON, 422: "The reason is not valid"}, lacks=_WHO),
)
async def reopen(
    reference: Reference, body: ReasonIn, talk: Talk, caller: OptionalCaller, token: Token = None
) -> MessageOut:
    """ "It is not fixed": the enquiry's status becomes `reopened`, and each organisation whose
    part was resolved or closed is told. The citizen (and their client) may within
    `follow_ups.reopen_days` days of it ending; staff with `enquiries:read-all` at any time."""
    return await service.reopen(
        talk, reference=reference, speaker=_speaker(caller, token), reason=body.reason
    )


@router.post(
    "/{reference}/notes",
    status_code=201,
    response_model=MessageOut,
    summary="Add a staff note to an enquiry",
    responses=documented_problems(
        {401: _COMMON[401], 404: _COMMON[404], 409: "The enquiry's personal data was erased"},
        lacks="the scope enquiries:read-all",
    ),
)
async def add_note(
    reference: Reference, body: NoteIn, talk: Talk, caller: OptionalCaller
) -> MessageOut:
    """A note for staff: never sent to a back-office, never shown to the citizen."""
    staff = check_scope(caller, (Scope.enquiries_read_all,))
    return await service.add_note(
        talk, reference=reference, speaker=Speaker(caller=staff), text=body.text
    )


def _is_form(request: Request) -> bool:
    content_type = request.headers.get("content-type", "")
    return content_type.split(";")[0].strip().lower() == MULTIPART


async def _json(request: Request, model: type[InformationIn]) -> InformationIn:
    """The JSON body, refused as FastAPI refuses a body it parses itself."""
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None


async def _form(request: Request, talk: Talk) -> tuple[str | None, list[Any]]:
    """The form's `text` and `files`, each file read within the limits and prepared."""
    limits = talk.settings.attachments
    # One over the limit, so the count is refused as too many (413), not as unreadable.
    async with request.form(max_files=limits.max_files + 1, max_fields=8) as form:
        unknown = sorted(set(form.keys()) - {"text", "files"})
        if unknown:
            raise ValidationFailed(f"The form has fields this route does not take: {unknown}.")
        texts = form.getlist("text")
        uploads = form.getlist("files")
        if len(texts) > 1 or any(not isinstance(t, str) for t in texts):
            raise ValidationFailed("Send one `text` field, as text.")
        if any(not isinstance(u, UploadFile) for u in uploads):
            raise ValidationFailed("Send each of `files` as a file.")
        text = str(texts[0]).strip() if texts else None
        if text is not None and (len(text) > MAX_TEXT or "\x00" in text):
            raise ValidationFailed(f"`text` holds at most {MAX_TEXT} characters, and no NUL.")
        # Starlette's own UploadFile, which FastAPI's only subclasses: the same reading.
        files = await read_uploads(cast(list[Any], uploads), limits)
    return text or None, files

"""What the citizen is sent, in English and Welsh (`cy`); any other language reads English.

A message is written here, whole, and handed to SMTP or to Notify as one ((body)): Notify's
templates then hold only that placeholder, so a new language or wording is a change here, not
in a Notify account. Each template names its fields with str.format: `reference` (in its
readable groups, K7Q-M4X-PB6), `service`, `organisations`, `status` (the status's words in
this language), `organisation` and `question` (a question's), `track_url` and
`unsubscribe_url`. The Welsh is the gateway's own translation: a council's Welsh language
officer should check it before it is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.catalogue.status import Status
from app.core.vocabulary import AlertKind


@dataclass(frozen=True)
class Template:
    subject: str
    body: str


@dataclass(frozen=True)
class Written:
    """One message, ready to send."""

    language: str
    subject: str  # email only
    body: str


_FOOTER = {
    "en": "Follow your enquiry: {track_url}\n\nTo stop these messages: {unsubscribe_url}\n",
    "cy": "Dilynwch eich ymholiad: {track_url}\n\n"
    "I roi'r gorau i'r negeseuon hyn: {unsubscribe_url}\n",
}

TEMPLATES: Mapping[str, Mapping[AlertKind, Template]] = {
    "en": {
        AlertKind.acknowledgement: Template(
            subject="We have your enquiry {reference}",
            body="Thank you. We have your enquiry about {service} and have sent it to "
            "{organisations}.\n\nYour reference is {reference}.\n\n",
        ),
        AlertKind.status: Template(
            subject="Your enquiry {reference}: {status}",
            body="Your enquiry {reference} about {service}: {status}.\n\n",
        ),
        AlertKind.question: Template(
            subject="A question about your enquiry {reference}",
            body="{organisation} has a question about your enquiry {reference} ({service}):\n\n"
            "{question}\n\nPlease answer by adding information on your enquiry's page.\n\n",
        ),
    },
    "cy": {
        AlertKind.acknowledgement: Template(
            subject="Mae gennym eich ymholiad {reference}",
            body="Diolch. Mae gennym eich ymholiad am {service} ac rydym wedi'i anfon at "
            "{organisations}.\n\nEich cyfeirnod yw {reference}.\n\n",
        ),
        AlertKind.status: Template(
            subject="Eich ymholiad {reference}: {status}",
            body="Eich ymholiad {reference} am {service}: {status}.\n\n",
        ),
        AlertKind.question: Template(
            subject="Cwestiwn am eich ymholiad {reference}",
            body="Mae gan {organisation} gwestiwn am eich ymholiad {reference} ({service}):\n\n"
            "{question}\n\nAtebwch drwy ychwanegu gwybodaeth ar dudalen eich ymholiad.\n\n",
        ),
    },
}

STATUS_WORDS: Mapping[str, Mapping[Status, str]] = {
    "en": {
        Status.acknowledged: "the organisation handling it has received it",
        Status.in_progress: "work on it has started",
        Status.information_requested: "more information is needed from you",
        Status.action_scheduled: "the work is scheduled",
        Status.resolved: "it has been resolved",
        Status.closed: "it is closed",
        Status.not_our_responsibility: "none of the organisations here deals with it",
        Status.duplicate: "someone had reported it already; it is dealt with there",
        Status.cancelled: "it was cancelled",
        Status.withdrawn: "it has been withdrawn, as you asked",
        Status.reopened: "it has been opened again",
    },
    "cy": {
        Status.acknowledged: "mae'r sefydliad sy'n delio ag ef wedi'i dderbyn",
        Status.in_progress: "mae'r gwaith arno wedi dechrau",
        Status.information_requested: "mae angen rhagor o wybodaeth gennych",
        Status.action_scheduled: "mae'r gwaith wedi'i drefnu",
        Status.resolved: "mae wedi'i ddatrys",
        Status.closed: "mae wedi'i gau",
        Status.not_our_responsibility: "nid yw'r un o'r sefydliadau yma'n delio ag ef",
        Status.duplicate: "roedd rhywun wedi rhoi gwybod amdano eisoes; caiff sylw yno",
        Status.cancelled: "cafodd ei ganslo",
        Status.withdrawn: "mae wedi'i dynnu'n ôl, fel y gofynnoch",
        Status.reopened: "mae wedi'i ailagor",
    },
}

_AND = {"en": " and ", "cy": " a "}


def status_words(language: str, status: str | None) -> str:
    """A status in this language's words (its own name for one without words)."""
    words = STATUS_WORDS.get(language, STATUS_WORDS["en"])
    try:
        return words.get(Status(status or ""), (status or "").replace("_", " "))
    except ValueError:
        return (status or "").replace("_", " ")


def names(language: str, organisations: list[str]) -> str:
    """ "A, B and C", in this language."""
    joiner = _AND.get(language, _AND["en"])
    if len(organisations) <= 1:
        return "".join(organisations)
    return ", ".join(organisations[:-1]) + joiner + organisations[-1]


def write(kind: AlertKind, language: str, fields: Mapping[str, str]) -> Written:
    """The message of this kind in this language (English if it has no template of its own)."""
    if language not in TEMPLATES:
        language = "en"
    template = TEMPLATES[language][kind]
    filled = {**fields, "status": status_words(language, fields.get("status"))}
    body = template.body.format(**filled) + _FOOTER[language].format(**filled)
    return Written(language, template.subject.format(**filled), body)

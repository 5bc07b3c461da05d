"""Every problem type the API answers with: its `type` URI, status and title come from its error
class, and /problems/{slug} describes each one."""

from __future__ import annotations

import pytest

from app.api.problems import PROBLEM_TYPES, problem
from app.core.errors import DomainError

# What clients see today; a change here is a change to the public API.
ANSWERED = {
    "bad-request": (400, "Bad request"),
    "validation": (422, "Your request is not valid"),
    "malformed-json": (400, "The body is not valid JSON"),
    "out-of-area": (422, "No organisation here covers that place"),
    "invalid-reference": (422, "That is not a valid enquiry reference"),
    "not-found": (404, "Not found"),
    "unauthenticated": (401, "We could not tell who sent this"),
    "forbidden": (403, "Your API key may not do this"),
    "invalid-link": (403, "That link is not valid"),
    "conflict": (409, "That name is taken"),
    "state-conflict": (409, "That cannot be done to it now"),
    "method-not-allowed": (405, "Method not allowed"),
    "idempotency-key-reused": (422, "Idempotency-Key reused with a different request"),
    "idempotency-key-in-flight": (
        409,
        "A request with this Idempotency-Key is still being processed",
    ),
    "payload-too-large": (413, "Request body too large"),
    "attachment-too-large": (413, "That file is too large"),
    "unsupported-attachment": (415, "That kind of file is not accepted"),
    "unreadable-attachment": (422, "That file could not be read"),
    "signed-link-refused": (403, "This link is wrong or has expired"),
    "unsupported-media-type": (415, "Unsupported media type"),
    "rate-limited": (429, "Too many requests"),
    "untrusted-host": (400, "Unknown host"),
    "headers-too-large": (431, "Request headers too large"),
    "cors-refused": (400, "Cross-origin request refused"),
    "unavailable": (503, "Not ready"),
    "internal": (500, "Internal error"),
}


def test_each_problem_type_has_its_status_and_title_in_its_class():
    assert {slug: (kind.status, kind.title) for slug, kind in PROBLEM_TYPES.items()} == ANSWERED


@pytest.mark.parametrize("slug", sorted(ANSWERED))
def test_an_answer_takes_type_title_and_status_from_the_class(slug):
    # The base initialiser: some classes ask for more (Forbidden the scope it needs).
    error = DomainError.__new__(PROBLEM_TYPES[slug])
    DomainError.__init__(error, "What went wrong.")
    answer = problem(error, instance="/somewhere")
    assert answer.status_code == ANSWERED[slug][0]
    assert answer.media_type == "application/problem+json"
    body = answer.body.decode()
    assert f'"type":"/problems/{slug}"' in body
    assert f'"title":"{ANSWERED[slug][1]}"' in body


async def test_each_problem_type_is_described_at_its_type_uri(anonymous):
    for slug, (_, title) in ANSWERED.items():
        page = await anonymous.get(f"/problems/{slug}")
        assert page.status_code == 200, slug
        assert page.json()["type"] == f"/problems/{slug}"
        assert page.json()["title"] == title
        assert page.json()["description"]


def test_a_second_class_for_a_taken_type_is_refused():
    with pytest.raises(TypeError, match="reuses the problem type"):

        class Again(DomainError):
            slug = "not-found"

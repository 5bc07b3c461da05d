"""Hypothesis strategies for fuzzing the API: valid enquiries drawn from the shipped catalogue and
the request models, the same mutated one field at a time, and hostile documents, bytes, headers
and query strings."""

from __future__ import annotations

import base64
import copy
import csv
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from app.catalogue.catalogue import Service, ServiceAttribute, load_catalogue
from app.catalogue.locate import LAT_STEP, LON_STEP, postcode_in_text
from app.core import reference as references
from app.core.settings import SHIPPED_CONFIG_DIR
from app.intake.schemas import Channel, Citizen, Consent, EnquiryIn, Location, PreferredContact

CATALOGUE = load_catalogue(
    SHIPPED_CONFIG_DIR,
    variables={"IAP_SANDBOX_URL": "http://127.0.0.1:9", "IAP_SANDBOX_SMTP_PORT": "9"},
)
# Sectors and districts of the built-in postcode table: any full postcode in them is in area.
PREFIXES = sorted(
    line.split(",", 1)[0]
    for line in (SHIPPED_CONFIG_DIR / "postcode_areas.csv").read_text().splitlines()[1:]
)
# Squares of the built-in point table holding an Oxfordshire postcode: a pin in one is placed in
# Oxfordshire or, where its neighbours disagree, sent to the triage desk; never out of area.
with (SHIPPED_CONFIG_DIR / "point_areas.csv").open(newline="") as _handle:
    SQUARES = sorted(
        {
            (int(r["lat"]), int(r["lon"]))
            for r in csv.DictReader(_handle)
            if r["county_code"] == "E10000025"
        }
    )

# --- text and numbers a client should never send, but will ---------------------------------

ODD_CHARACTERS = [
    "\x00",  # NUL: PostgreSQL text cannot hold it
    "\ud800",  # lone surrogates: not Unicode scalar values, not encodable as UTF-8
    "\udfff",
    "\u202e",  # right-to-left override
    "\u200f",  # right-to-left mark
    "\u200b",  # zero-width space
    "\ufeff",  # byte order mark
    "\uffff",
    "\U0010ffff",
    "\u0301",  # a combining accent with nothing to combine with
    "\x7f",
    "\x1b",
    "\r",
    "\n",
    "\t",
    "\u00a0",
    "ß",  # upper-cases to two letters
    "İ",  # lower-cases to two code points
    "\U0001f4a9",
    "%",
    "\\",
    '"',
]
odd_text = st.one_of(
    st.text(alphabet=st.characters() | st.sampled_from(ODD_CHARACTERS), max_size=40),
    st.sampled_from(["", " ", "\x00", "\ud800", "null", "NaN"]),
    st.integers(4000, 5000).map(lambda n: "x" * n),  # past every length limit
)

# Numbers past what a double or a 64-bit integer holds; within Python's 4300-digit limit on
# converting integers to text, and a few past it.
absurd_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.sampled_from([300, 4000]).map(lambda n: 10**n) | st.just(2**53 + 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308]),
)

json_scalars = st.none() | st.booleans() | absurd_numbers | odd_text
json_documents = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(odd_text, children, max_size=4)
    ),
    max_leaves=12,
)

# Number literals JSON does not have, or that no double holds, written raw into a document.
RAW_LITERALS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e309",
    "-1e999",
    "1E400",
    "0e99999",
    "1" * 5000,  # more digits than Python converts from text to an integer
    "-0",
    "0.1e-400",
]
_RAW = "__raw_literal_{}__"


def with_raw_literal(document: Any, index: int) -> Any:
    """The document with one leaf replaced by a placeholder for RAW_LITERALS[index]."""
    placeholder = _RAW.format(index)
    if isinstance(document, dict) and document:
        key = sorted(document, key=str)[0]
        return {**document, key: with_raw_literal(document[key], index)}
    if isinstance(document, list) and document:
        return [with_raw_literal(document[0], index), *document[1:]]
    return placeholder


def encode(document: Any, *, ensure_ascii: bool = True) -> bytes:
    """JSON bytes as a careless client writes them: NaN allowed, lone surrogates passed through
    (escaped, or as invalid UTF-8), raw literals spliced in."""
    text = json.dumps(document, ensure_ascii=ensure_ascii, allow_nan=True)
    for index, literal in enumerate(RAW_LITERALS):
        text = text.replace(json.dumps(_RAW.format(index)), literal)
    return text.encode("utf-8", "surrogatepass")


def deeply_nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return (opener * depth + "1" + closer * depth).encode()


# --- valid enquiries, one or more per shipped service ----------------------------------------


def typed_text(max_size: int) -> st.SearchStrategy[str]:
    """What a person may type: any characters but NUL, not only spaces."""
    return st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
        min_size=1,
        max_size=max_size,
    ).filter(str.strip)


def postcodes() -> st.SearchStrategy[str]:
    """Full postcodes inside the built-in table, written the ways people write them."""

    def full(prefix: str, digit: int, letters: str) -> str:
        outward, _, sector = prefix.partition(" ")
        return f"{outward} {sector or digit}{letters}"

    letters = st.text(alphabet="ABDEFGHJLNPQRSTUWXYZ", min_size=2, max_size=2)
    canonical = st.builds(full, st.sampled_from(PREFIXES), st.integers(0, 9), letters)
    return canonical.flatmap(
        lambda pc: st.sampled_from([pc, pc.lower(), pc.replace(" ", ""), f"  {pc} "])
    )


def pins() -> st.SearchStrategy[dict[str, float]]:
    """A point anywhere in a square of the point table that holds an Oxfordshire postcode."""
    within = st.floats(0, 1, exclude_max=True)
    return st.builds(
        lambda square, down, across: {
            "lat": round((square[0] + down) * LAT_STEP, 6),
            "lon": round((square[1] + across) * LON_STEP, 6),
        },
        st.sampled_from(SQUARES),
        within,
        within,
    )


def attribute_value(attribute: ServiceAttribute) -> st.SearchStrategy[Any]:
    keys = [v.key for v in attribute.values]
    match attribute.datatype:
        case "singlevaluelist":
            return st.sampled_from(keys)
        case "multivaluelist":
            return st.lists(st.sampled_from(keys), min_size=1, unique=True)
        case "number":
            return st.integers(0, 10_000) | st.floats(0, 1e6, allow_nan=False)
        case "datetime":
            moments = st.datetimes(timezones=st.just(UTC))
            return moments.map(datetime.isoformat) | st.dates().map(lambda d: d.isoformat())
        case _:
            return typed_text(200)


@st.composite
def attributes_for(draw: st.DrawFn, service: Service) -> dict[str, Any]:
    answers = {}
    for attribute in service.attributes:
        if attribute.required or draw(st.booleans()):
            answers[attribute.code] = draw(attribute_value(attribute))
    return answers


locations = st.one_of(
    st.fixed_dictionaries({"postcode": postcodes()}, optional={"address": st.just("1 High St")}),
    st.tuples(pins(), st.none() | postcodes()).map(
        lambda drawn: drawn[0] if drawn[1] is None else {**drawn[0], "postcode": drawn[1]}
    ),
    st.fixed_dictionaries({"uprn": st.from_regex(r"\d{1,12}", fullmatch=True)}),
    # Free text reads no postcode (one outside the table would be out of area), or ends in one.
    st.fixed_dictionaries(
        {"address": typed_text(300).filter(lambda text: postcode_in_text(text) is None)}
    ),
    st.builds(lambda text, pc: {"address": f"{text}, {pc}"}, typed_text(280), postcodes()),
)


@st.composite
def citizens(draw: st.DrawFn) -> dict[str, Any]:
    citizen = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "name": typed_text(200),
                "email": st.emails(),
                # Spaces inside only: the model strips the ends before checking the length.
                "phone": st.from_regex(r"\+?[0-9()-][0-9 ()-]{5,18}[0-9()-]", fullmatch=True),
                "accessibility_needs": st.sampled_from(["Large print", "BSL interpreter"]),
                "language": st.sampled_from(["cy", "pl", "en-GB", "zh-Hant-TW"]),
            },
        )
    )
    reachable = [PreferredContact.post, PreferredContact.none]
    reachable += [PreferredContact(k) for k in ("email", "phone") if k in citizen]
    if draw(st.booleans()):
        citizen["preferred_contact"] = draw(st.sampled_from(reachable)).value
    return citizen


descriptions = typed_text(300) | st.sampled_from(
    ["Someone is breaking in next door right now", "Pothole by the bus stop"]
)


@st.composite
def valid_enquiries(draw: st.DrawFn, service_code: str | None = None) -> dict[str, Any]:
    """A well-formed enquiry for this or any shipped service, located in the area."""
    code = service_code or draw(st.sampled_from(sorted(CATALOGUE.services)))
    service = CATALOGUE.services[code]
    enquiry: dict[str, Any] = {
        "service_code": service.code,
        "description": draw(descriptions),
        "channel": draw(st.sampled_from(list(Channel))).value,
        "attributes": draw(attributes_for(service)),
    }
    if service.needs_location or draw(st.booleans()):
        enquiry["location"] = draw(locations)
    if draw(st.booleans()):
        enquiry["citizen"] = draw(citizens())
    if draw(st.booleans()):
        enquiry["consent"] = {"share_contact_details": draw(st.booleans())}
    return enquiry


# --- the same, one field changed ----------------------------------------------------------

# Every field of the request models, so a field added to a model is fuzzed too.
MODEL_FIELDS = {
    (): list(EnquiryIn.model_fields),
    ("location",): list(Location.model_fields),
    ("citizen",): list(Citizen.model_fields),
    ("consent",): list(Consent.model_fields),
}


def paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a document a value can be changed: present keys, list items, and each
    model field whether present or not."""
    found = [prefix] if prefix else []
    if isinstance(document, dict):
        keys = set(document) | set(MODEL_FIELDS.get(prefix, []))
        for key in sorted(keys):
            found += paths(document.get(key), (*prefix, key))
    elif isinstance(document, list):
        for index, item in enumerate(document):
            found += paths(item, (*prefix, index))
    return found


_DELETE = object()
replacements = st.one_of(
    json_documents,
    odd_text,
    absurd_numbers,
    st.just(_DELETE),
    st.sampled_from([None, True, [], {}, "", [["road"]], ["road"], "2024-13-45T25:61"]),
)


def mutated(document: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A copy of the document with the value at `path` replaced (or removed)."""
    changed = copy.deepcopy(document)
    parent: Any = changed
    for step in path[:-1]:
        if isinstance(parent, dict):
            parent = parent.setdefault(step, {})
            if not isinstance(parent, dict | list):
                return changed
        else:
            parent = parent[step]
    last = path[-1]
    if value is _DELETE:
        if isinstance(parent, dict):
            parent.pop(last, None)
        else:
            del parent[last]
    else:
        parent[last] = value
    return changed


def near_misses(value: Any) -> st.SearchStrategy[Any]:
    """Values a confused client sends in place of this one: the right value in the wrong type,
    or with something odd stuck to it."""
    misses = [[value], {"value": value}, str(value), json.dumps(value)]
    if isinstance(value, str):
        misses += [value * 100, value.upper(), f" {value}\x00", f"{value}\u202e", value[:-1]]
        misses += [float("nan"), len(value)]
    if isinstance(value, bool | int | float):
        misses += [-value, value * 10**300, str(value) + "e999"]
    return st.sampled_from(misses)


@st.composite
def nearly_valid_enquiries(draw: st.DrawFn) -> dict[str, Any]:
    """A valid enquiry with one value (anywhere, however deep) replaced, removed or added."""
    enquiry = draw(valid_enquiries())
    path = draw(st.sampled_from(paths(enquiry)))
    beside_a_field = isinstance(_get(enquiry, path[:-1]), dict)  # not an item of a list
    if beside_a_field and draw(st.integers(0, 5)) == 0:  # an unknown field beside it
        path = (*path[:-1], draw(st.sampled_from(["extra", "Service_Code", "", "\x00"])))
    current = _get(enquiry, path)
    return mutated(enquiry, path, draw(near_misses(current) | replacements))


def _get(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        if isinstance(document, dict):
            document = document.get(step)
        elif isinstance(document, list):
            document = document[step]
        else:
            return None
    return document


# --- headers, query strings, references ---------------------------------------------------

# What HTTP/1.1 and HTTP/2 let through in a header value: visible ASCII, space and tab inside,
# and obs-text bytes (read as Latin-1). A NUL or a line break never reaches an application.
header_values = st.text(
    alphabet=st.characters(codec="latin-1", exclude_characters="\x7f", min_codepoint=0x20)
    | st.just("\t"),
    max_size=300,
).map(str.strip)
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON",
    "application/problem+json",
    "application/vnd.iap+json",
    "application/json; charset=latin-1",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "+json",
    ";",
]
content_types = st.none() | st.sampled_from(CONTENT_TYPES) | header_values
idempotency_keys = st.none() | header_values | st.sampled_from(["call-0001", "x" * 255, "x" * 256])

# Percent-escapes that decode to NUL, a lone surrogate (as CESU-8), bytes that are not UTF-8.
QUERY_ODDITIES = ["%00", "%ED%A0%80", "%FF", "%C0%AF", "%", "%2", "+", "&", "=", "%26", "%0A"]
query_words = st.one_of(
    odd_text.map(lambda s: quote(s.encode("utf-8", "surrogatepass"), safe="")),
    st.lists(st.sampled_from(QUERY_ODDITIES), min_size=1, max_size=3).map("".join),
)


def _moment(moment: datetime, offset_minutes: int, naive: bool) -> str:
    zone = None if naive else timezone(timedelta(minutes=offset_minutes))
    return moment.replace(tzinfo=zone).isoformat()


# Times at the edges of what Python holds, with offsets that push them past the edge in UTC.
moments = st.builds(
    _moment,
    st.datetimes() | st.sampled_from([datetime.min, datetime.max]),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
    st.booleans(),
)


def _cursor(first: Any, second: Any) -> str:
    raw = json.dumps([first, second], allow_nan=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


cursors = st.one_of(
    st.builds(_cursor, moments | json_scalars, st.uuids().map(str) | json_scalars),
    st.builds(lambda d: base64.urlsafe_b64encode(encode(d)).decode(), json_documents),
    st.text(max_size=60),
)
LIST_PARAMETERS: dict[str, st.SearchStrategy[str]] = {
    "service_code": st.sampled_from(sorted(CATALOGUE.services)) | st.text(max_size=70),
    "status": st.sampled_from(["routed", "dispatched", "resolved"]) | st.text(max_size=40),
    "channel": st.sampled_from([c.value for c in Channel]) | st.text(max_size=20),
    "organisation_id": st.sampled_from(sorted(CATALOGUE.organisations)) | st.text(max_size=70),
    "created_after": moments | st.text(max_size=30),
    "created_before": moments | st.text(max_size=30),
    "cursor": cursors,
    "limit": st.integers().map(str) | st.sampled_from(["NaN", "1e3", "0x10", "", "1.5"]),
}


@st.composite
def list_query_strings(draw: st.DrawFn) -> str:
    """A query string for GET /v1/enquiries: known parameters with fuzzed values, unknown ones,
    repeats, and raw escapes that decode to nothing sensible."""
    pairs = []
    for name in draw(st.lists(st.sampled_from([*LIST_PARAMETERS, "other"]), max_size=5)):
        value = draw(LIST_PARAMETERS.get(name, st.text(max_size=10)))
        encoded = quote(value.encode("utf-8", "surrogatepass"), safe="")
        if draw(st.integers(0, 4)) == 0:
            encoded = draw(query_words)
        pairs.append(f"{name}={encoded}")
    return "&".join(pairs)


def _with_check(body: str) -> str:
    return references.display(body + references._check_character(body))


reference_texts = st.one_of(
    st.text(alphabet=references.ALPHABET, min_size=8, max_size=8).map(_with_check),
    st.text(alphabet=references.ALPHABET + "-  01IOabc", max_size=14),
    odd_text,
)
tokens = st.none() | odd_text | st.text(min_size=1, max_size=120)


# --- the privacy, audit and webhook routes -----------------------------------------------

subjects = st.one_of(
    json_documents,
    st.fixed_dictionaries(
        {},
        optional={
            "email": odd_text | st.emails() | json_scalars,
            "phone": odd_text | st.from_regex(r"\+?[0-9 ()-]{7,20}", fullmatch=True),
        },
    ),
)
AUDIT_PARAMETERS: dict[str, st.SearchStrategy[str]] = {
    "action": st.sampled_from(["enquiry.read", "privacy.erase"]) | st.text(max_size=80),
    "subject": st.text(max_size=140),
    "cursor": cursors,
    "limit": LIST_PARAMETERS["limit"],
}
webhook_requests = st.one_of(
    json_documents,
    st.fixed_dictionaries(
        {},
        optional={
            "url": odd_text
            | st.sampled_from(["https://127.0.0.1/hook", "http://[::1]:1/x", "ftp://x", ""]),
            "events": st.lists(odd_text | st.sampled_from(["*", "enquiry.*", "x.*.y"]))
            | json_scalars,
            "organisation_id": st.sampled_from(sorted(CATALOGUE.organisations)) | odd_text,
        },
    ),
)
webhook_ids = st.uuids().map(str) | st.text(min_size=1, max_size=60)
webhook_patches = st.one_of(
    json_documents,
    st.fixed_dictionaries(
        {},
        optional={
            "url": json_scalars
            | st.sampled_from(["https://127.0.0.1/hook", "http://[::1]:1/x", "ftp://x", ""]),
            "events": st.lists(odd_text | st.sampled_from(["*", "enquiry.*", "ping"]))
            | json_scalars,
            "enabled": json_scalars,
        },
    ),
)
rotations = st.one_of(
    json_documents,
    st.fixed_dictionaries({}, optional={"overlap_seconds": absurd_numbers | json_scalars}),
)


# --- status updates pushed by organisations (signed by the test with the right secret) -------

CASE = "__our_case__"  # replaced by the remote reference of a delivered enquiry
_UPDATE_STATUSES = st.sampled_from(["in_progress", "fixed", "closed", "not_our_responsibility"])
_NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC).isoformat()
# The first and last moments Python holds, pushed past the edge of UTC by their offset.
edge_moments = st.builds(
    _moment,
    st.sampled_from([datetime.min, datetime.max]),
    st.integers(-23 * 60 - 59, 23 * 60 + 59),
    st.just(False),
)
_UPDATE_FIELDS: dict[str, tuple[Any, list[st.SearchStrategy[Any]]]] = {
    # name: (a valid value, what a careless or hostile sender puts there instead, each kind
    # as likely as the others)
    "update_id": ("u1", [odd_text, json_scalars]),
    "remote_reference": (CASE, [odd_text, json_scalars]),
    "reference": (None, [reference_texts, json_scalars]),
    "status": ("in_progress", [_UPDATE_STATUSES, odd_text, json_scalars]),
    "description": ("Crew assigned", [odd_text, json_scalars]),
    "updated_at": (_NOW, [edge_moments, moments, odd_text, json_scalars]),
}


@st.composite
def nearly_valid_updates(draw: st.DrawFn) -> dict[str, Any]:
    """A valid status update with up to three fields changed or left out."""
    update = {name: valid for name, (valid, _) in _UPDATE_FIELDS.items() if valid is not None}
    update["update_id"] = draw(st.uuids()).hex
    for name in draw(st.lists(st.sampled_from(sorted(_UPDATE_FIELDS)), max_size=3, unique=True)):
        if draw(st.integers(0, 5)) == 0:
            update.pop(name, None)
        else:
            update[name] = draw(draw(st.sampled_from(_UPDATE_FIELDS[name][1])))
    return update


inbound_updates = json_documents | nearly_valid_updates()
# The Open311 form's names for the same fields; every value is text.
_FORM_NAMES = {"remote_reference": "service_request_id", "updated_at": "updated_datetime"}


@st.composite
def open311_updates(draw: st.DrawFn) -> dict[str, str]:
    """A form as an Open311 partner pushes it, nearly valid; "KEY" stands for its api_key."""
    update = draw(nearly_valid_updates())
    form = {
        _FORM_NAMES.get(name, name): value if isinstance(value, str) else json.dumps(value)
        for name, value in update.items()
        if name != "reference"
    }
    form["api_key"] = draw(st.just("KEY") | odd_text)
    return form

"""Simulated back-offices on loopback, for development and tests (`iap sandbox`).

One HTTP app, a path prefix per organisation; which simulator an organisation gets follows its
adapter `type` in the catalogue:

- open311    Open311 GeoReport v2 at /{org}/open311/v2/...            (open311.py)
- rest-json  the county's case API with OAuth2, /{org}/oauth/token and /{org}/api/cases
                                                                        (county.py)
- fhir       FHIR R4 ServiceRequest at /{org}/fhir/...                  (fhir.py)
- email      the SMTP sink on its own port, read at /mail and /mail.json (mail.py)
- triage     nothing
- any id     the generic http-json /{org}/enquiries, until every organisation has its own
                                                                        (generic.py)

Everything received lands in one record, `app.state.office` (a BackOffice, office.py), the same
for every protocol; cases move through their protocol's statuses by hand or over time, and
organisations that push send each move to the gateway (core.py, pushes.py). Misbehaviour (slow,
flaky, down, accepting then silent) is set per organisation (faults.py); the controls are under
/_sandbox (admin.py).
"""

from app.sandbox.app import create_sandbox_app
from app.sandbox.core import Sandbox
from app.sandbox.office import BackOffice, Behaviour

__all__ = ["BackOffice", "Behaviour", "Sandbox", "create_sandbox_app"]

"""`http-json`: POST the enquiry as JSON to `{base_url}/enquiries`, keyed by the dispatch id.

The `Idempotency-Key` header is the dispatch id, so a create repeated after an ambiguous failure
(a timeout after the request left) does not make a second case at the back-office.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import AnyHttpUrl, SecretStr

from app.adapters.base import (
    Adapter,
    AdapterConfig,
    Delivery,
    PermanentError,
    Receipt,
    RetryableError,
    describe_transport_error,
    raise_for_response,
)


class HttpJsonConfig(AdapterConfig):
    base_url: AnyHttpUrl
    api_key: SecretStr | None = None


class HttpJsonAdapter(Adapter):
    config_model = HttpJsonConfig
    config: HttpJsonConfig

    async def deliver(self, delivery: Delivery) -> Receipt:
        url = f"{str(self.config.base_url).rstrip('/')}/enquiries"
        headers = {"Idempotency-Key": str(delivery.dispatch_id)}
        if self.config.api_key is not None:
            headers["Authorization"] = f"Bearer {self.config.api_key.get_secret_value()}"
        try:
            response = await self.client.post(
                url, json=payload(delivery), headers=headers, timeout=self.timeout
            )
        except httpx.HTTPError as exc:
            raise RetryableError(describe_transport_error(exc)) from exc
        raise_for_response(response)
        try:
            answer = response.json()
        except ValueError as exc:
            raise PermanentError(
                f"HTTP {response.status_code} with a body that is not JSON"
            ) from exc
        remote = answer.get("id") if isinstance(answer, dict) else None
        return Receipt(remote_reference=str(remote) if remote is not None else None)


def payload(delivery: Delivery) -> dict[str, Any]:
    """What the organisation receives: the enquiry, and the citizen's details it may have."""
    enquiry = delivery.enquiry
    body: dict[str, Any] = {
        "reference": delivery.reference,
        "dispatch_id": str(delivery.dispatch_id),
        "service_code": enquiry["service_code"],
        "service_name": delivery.service_name,
        "description": enquiry["description"],
        "channel": enquiry["channel"],
        "location": enquiry.get("location"),
        "attributes": enquiry.get("attributes") or {},
        "submitted_at": enquiry["created_at"].isoformat(),
    }
    if delivery.citizen is not None:
        body["citizen"] = delivery.citizen
    return body

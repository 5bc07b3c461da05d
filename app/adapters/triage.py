"""`triage`: the contact centre's desk reads its queue inside the gateway; nothing is sent."""

from __future__ import annotations

from app.adapters.base import Adapter, Delivery, Receipt


class TriageAdapter(Adapter):
    async def deliver(self, delivery: Delivery) -> Receipt:
        return Receipt(remote_reference=f"triage:{delivery.enquiry.reference}")

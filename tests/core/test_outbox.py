"""The outbox's own parts: a new row, and the one settings model both queues build on."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.core.outbox import new_row
from app.core.settings import Settings
from app.core.vocabulary import OutboxState

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_new_row_is_pending_and_due_at_once_with_nothing_spent():
    row = new_row(now=NOW, organisation_id="cherwell")
    assert row["state"] == OutboxState.pending == "pending"
    assert (row["attempts"], row["claims"]) == (0, 0)
    assert row["next_attempt_at"] == row["created_at"] == row["updated_at"] == NOW
    assert row["organisation_id"] == "cherwell"
    assert new_row(now=NOW)["id"] != row["id"]


def test_each_queue_keeps_its_own_defaults():
    settings = Settings()
    dispatch, webhooks = settings.dispatch, settings.webhooks
    assert (dispatch.concurrency, dispatch.jitter, dispatch.max_attempts) == (16, 0.2, 9)
    assert dispatch.retry_schedule == [5, 30, 120, 600, 1800, 3600, 7200, 14400]
    assert (webhooks.concurrency, webhooks.jitter, webhooks.max_attempts) == (8, 0.1, 8)
    assert webhooks.retry_schedule == [5, 300, 1800, 7200, 18000, 36000, 36000]
    for queue in (dispatch, webhooks):
        assert (queue.lease_seconds, queue.batch_size, queue.poll_seconds) == (60.0, 32, 2.0)


def test_each_queue_reads_its_own_environment_variables(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("IAP_DISPATCH__LEASE_SECONDS", "7")
    monkeypatch.setenv("IAP_DISPATCH__SETTLE_SECONDS", "3")
    monkeypatch.setenv("IAP_WEBHOOKS__LEASE_SECONDS", "11")
    monkeypatch.setenv("IAP_WEBHOOKS__RETRY_SCHEDULE", "[1, 2]")
    settings = Settings()
    assert (settings.dispatch.lease_seconds, settings.dispatch.settle_seconds) == (7.0, 3.0)
    assert settings.webhooks.lease_seconds == 11.0
    assert (settings.webhooks.retry_schedule, settings.webhooks.max_attempts) == ([1, 2], 3)
    assert settings.dispatch.retry_schedule[0] == 5

"""Fixtures shared by the adapter tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from tests.adapters.mailserver import Mailbox, Server, free_port


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    """Start aiosmtpd servers on free loopback ports; all stopped after the test."""
    controllers: list[Controller] = []

    def start(mailbox: Mailbox | None = None, **smtp_options: Any) -> Server:
        mailbox = mailbox or Mailbox()
        port = free_port()
        controller = Controller(mailbox, hostname="127.0.0.1", port=port, **smtp_options)
        controller.start()
        controllers.append(controller)
        return Server(mailbox, port)

    yield start
    for controller in controllers:
        controller.stop()

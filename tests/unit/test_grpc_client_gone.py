"""The log line of a gRPC call its client cancelled (pure logic: a stand-in call context)."""

from __future__ import annotations

import logging
from typing import cast

import grpc
import pytest

from gateway.receivers.otlp_grpc import _ClientGone
from otlp.signals import Signal


class _Context:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer


@pytest.mark.parametrize(("peer", "expected"), [
    ("ipv4:127.0.0.1:5050", "client ipv4:127.0.0.1:5050 cancelled its traces export during the request body"),
    ("", "a client cancelled its traces export during the request body"),
])
def test_cancelled_call_log_names_the_peer_or_says_a_client(caplog: pytest.LogCaptureFixture, peer: str,
                                                           expected: str) -> None:
    gone = _ClientGone(cast(grpc.aio.ServicerContext, _Context(peer)), Signal.TRACES)
    with caplog.at_level(logging.WARNING, logger="gateway.receivers.otlp_grpc"):
        gone.count()
    assert [r.getMessage() for r in caplog.records] == [expected]

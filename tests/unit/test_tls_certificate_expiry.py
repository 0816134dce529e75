"""The served certificate's notAfter as a gauge: read from the PEM (UTCTime and GeneralizedTime),
set when a pair is loaded, updated when a reload takes a new one."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import trustme
from prometheus_client import REGISTRY

from gateway.receivers.tls import CertSource, certificate_not_after
from settings.config import TlsServerConfig

UTC = datetime.UTC


def _issue(ca: trustme.CA, not_after: datetime.datetime) -> trustme.LeafCert:
    return ca.issue_cert("127.0.0.1", not_before=datetime.datetime(2024, 1, 1, tzinfo=UTC),
                         not_after=not_after)


def _write(leaf: trustme.LeafCert, directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "tls.crt", directory / "tls.key"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))  # leaf, then its CA
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def _expiry(listener: str) -> float | None:
    return REGISTRY.get_sample_value("gateway_tls_certificate_expiry_timestamp_seconds",
                                     {"listener": listener})


def test_not_after_of_the_leaf_in_both_time_encodings() -> None:
    ca = trustme.CA()
    for when in (datetime.datetime(2031, 5, 17, 8, 30, 5, tzinfo=UTC),    # UTCTime (before 2050)
                 datetime.datetime(2061, 2, 3, 4, 5, 6, tzinfo=UTC)):     # GeneralizedTime
        leaf = _issue(ca, when)
        chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        assert certificate_not_after(chain) == when.timestamp()


def test_gauge_set_on_load_and_on_reload(tmp_path: Path) -> None:
    ca = trustme.CA()
    first = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    cert, key = _write(_issue(ca, first), tmp_path)
    source = CertSource(TlsServerConfig(cert_file=str(cert), key_file=str(key)), "admin.tls")
    assert _expiry("admin") == first.timestamp()

    renewed = datetime.datetime(2030, 4, 2, 3, 4, 5, tzinfo=UTC)
    _write(_issue(ca, renewed), tmp_path)
    os.utime(cert, ns=(0, 1))  # a changed stamp even within the filesystem's time resolution
    assert source.refresh()
    assert _expiry("admin") == renewed.timestamp()

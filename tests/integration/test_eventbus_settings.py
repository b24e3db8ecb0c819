"""Broker URLs and client settings: parsing, defaults, validation, and the password kept out of sight."""

from __future__ import annotations

from pathlib import Path

import pytest

from eventbus import BrokerAddress, BrokerSettings, EventBusConfigError, parse_broker_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("tcp://127.0.0.1:1883", BrokerAddress("127.0.0.1", 1883, tls=False)),
        ("tcp://localhost", BrokerAddress("localhost", 1883, tls=False)),
        ("mqtt://broker:1884", BrokerAddress("broker", 1884, tls=False)),
        ("ssl://broker", BrokerAddress("broker", 8883, tls=True)),
        ("mqtts://broker:9000", BrokerAddress("broker", 9000, tls=True)),
        ("tls://[::1]:8884", BrokerAddress("::1", 8884, tls=True)),
    ],
)
def test_parse_broker_url(url: str, expected: BrokerAddress) -> None:
    assert parse_broker_url(url) == expected


def test_canonical_url() -> None:
    assert parse_broker_url("mqtts://[::1]").url == "ssl://[::1]:8883"
    assert parse_broker_url("mqtt://h").url == "tcp://h:1883"


@pytest.mark.parametrize(
    "url", ["http://h:1883", "127.0.0.1:1883", "tcp://", "tcp://h:99999", "tcp://h:1883/path", "tcp://h?x=1"]
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(EventBusConfigError) as info:
        parse_broker_url(url)
    assert info.value.field == "url"


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(EventBusConfigError) as info:
        parse_broker_url("tcp://user:hunter2@h:1883")
    assert "hunter2" not in str(info.value)
    assert "username/password" in str(info.value)


def test_defaults_mirror_kubeedge() -> None:
    settings = BrokerSettings()
    assert settings.url == "tcp://127.0.0.1:1883"
    assert settings.address == BrokerAddress("127.0.0.1", 1883, tls=False)
    assert settings.ssl_context() is None


def test_password_never_in_repr() -> None:
    settings = BrokerSettings(username="edge", password="hunter2")
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)
    assert "edge" in repr(settings)


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"ca_file": Path("/ca.pem")}, "ca_file"),  # TLS files need ssl://
        ({"url": "ssl://h", "cert_file": Path("/c.pem")}, "key_file"),
        ({"password": "x"}, "username"),
        ({"keepalive": 0}, "keepalive"),
        ({"max_inflight": 0}, "max_inflight"),
        ({"reconnect_min": 5, "reconnect_max": 1}, "reconnect_min"),
    ],
)
def test_invalid_settings_name_the_field(fields: dict[str, object], bad_field: str) -> None:
    with pytest.raises(EventBusConfigError) as info:
        BrokerSettings(**fields)  # type: ignore[arg-type]
    assert info.value.field == bad_field


def test_unreadable_ca_file_is_a_config_error(tmp_path: Path) -> None:
    settings = BrokerSettings(url="ssl://h", ca_file=tmp_path / "missing.pem")
    with pytest.raises(EventBusConfigError) as info:
        settings.ssl_context()
    assert info.value.field == "ca_file"

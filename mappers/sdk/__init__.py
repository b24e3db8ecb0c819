"""The mapper SDK: scheduling, twin values, MQTT, desired-value writes, device state, reconnects, metrics.

A protocol plugs in with a :class:`ProtocolPlugin` that builds a :class:`DeviceDriver` per device
(``connect`` / ``read_many`` / ``write_one`` / ``close``); :class:`Mapper` does the rest.
"""

# The backoff lives in eventbus (shared with edgecore); re-exported as ``Mapper(reconnect=...)`` takes it.
from eventbus import Backoff, BackoffPolicy
from mappers.sdk.devices import (
    DEFAULT_COLLECT_CYCLE,
    config_error,
    device_config,
    load_device_configs,
    membership_config,
)
from mappers.sdk.driver import (
    DeviceConfig,
    DeviceDriver,
    DeviceValue,
    PropertyConfig,
    ProtocolPlugin,
    PushReceiver,
    Reading,
    RequestRecorder,
    SubscribingDriver,
)
from mappers.sdk.errors import (
    DeviceRejectedError,
    DeviceResponseError,
    DeviceUnreachableError,
    MapperConfigError,
    MapperError,
    PropertyError,
    ValueEncodeError,
    ValueRefusedError,
)
from mappers.sdk.mapper import Mapper
from mappers.sdk.metrics import MapperMetrics
from mappers.sdk.once import Row, read_once
from mappers.sdk.runner import DeviceRunner, DeviceState, Report, Reporter
from mappers.sdk.values import format_reported, parse_desired, reported_text

__all__ = [
    "DEFAULT_COLLECT_CYCLE",
    "Backoff",
    "BackoffPolicy",
    "DeviceConfig",
    "DeviceDriver",
    "DeviceRejectedError",
    "DeviceResponseError",
    "DeviceRunner",
    "DeviceState",
    "DeviceUnreachableError",
    "DeviceValue",
    "Mapper",
    "MapperConfigError",
    "MapperError",
    "MapperMetrics",
    "PropertyConfig",
    "PropertyError",
    "ProtocolPlugin",
    "PushReceiver",
    "Reading",
    "Report",
    "Reporter",
    "RequestRecorder",
    "Row",
    "SubscribingDriver",
    "ValueEncodeError",
    "ValueRefusedError",
    "config_error",
    "device_config",
    "format_reported",
    "load_device_configs",
    "membership_config",
    "parse_desired",
    "read_once",
    "reported_text",
]

"""The edge daemon: composes EventBus, DeviceTwin and, later, EdgeHub, MetaManager and Edged."""

from edgecore.config import (
    EdgeCoreConfig,
    MqttMode,
    dump_config,
    load_config,
    parse_config,
)
from edgecore.core import EdgeCore, broker_settings
from edgecore.devices import load_devices, twin_device
from edgecore.errors import (
    ConfigIssue,
    DevicesDirError,
    EdgeCoreConfigError,
    EdgeCoreError,
    ModuleFailedError,
)
from edgecore.modules import BrokerExitedError, UploadSink
from edgecore.subtopics import InvalidTopicError, SubTopicStoreError, check_topic_filter
from edgecore.supervisor import Module, ModuleState, ModuleStatus, Supervisor

__all__ = [
    "BrokerExitedError",
    "ConfigIssue",
    "DevicesDirError",
    "EdgeCore",
    "EdgeCoreConfig",
    "EdgeCoreConfigError",
    "EdgeCoreError",
    "InvalidTopicError",
    "Module",
    "ModuleFailedError",
    "ModuleState",
    "ModuleStatus",
    "MqttMode",
    "SubTopicStoreError",
    "Supervisor",
    "UploadSink",
    "broker_settings",
    "check_topic_filter",
    "dump_config",
    "load_config",
    "load_devices",
    "parse_config",
    "twin_device",
]

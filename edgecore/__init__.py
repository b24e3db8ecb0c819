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
    MetaMessageError,
    MetaRevisionGoneError,
    MetaSelectorError,
    MetaServerError,
    MetaStoreError,
)
from edgecore.metamanager import (
    CLUSTER_SCOPED_TYPES,
    META_TYPES,
    EventType,
    MetaEvent,
    MetaManager,
    Subscription,
    revision_token,
)
from edgecore.metaserver import MetaServer, Selector
from edgecore.modules import BrokerExitedError, UploadSink
from edgecore.nodeinfo import EDGE_TAINT, NodeInfo, kubelet_version
from edgecore.stream import ContainerStreams
from edgecore.subtopics import InvalidTopicError, SubTopicStoreError, check_topic_filter

__all__ = [
    "CLUSTER_SCOPED_TYPES",
    "EDGE_TAINT",
    "META_TYPES",
    "BrokerExitedError",
    "ConfigIssue",
    "ContainerStreams",
    "DevicesDirError",
    "EdgeCore",
    "EdgeCoreConfig",
    "EdgeCoreConfigError",
    "EdgeCoreError",
    "EventType",
    "InvalidTopicError",
    "MetaEvent",
    "MetaManager",
    "MetaMessageError",
    "MetaRevisionGoneError",
    "MetaSelectorError",
    "MetaServer",
    "MetaServerError",
    "MetaStoreError",
    "MqttMode",
    "NodeInfo",
    "Selector",
    "SubTopicStoreError",
    "Subscription",
    "UploadSink",
    "broker_settings",
    "check_topic_filter",
    "dump_config",
    "kubelet_version",
    "load_config",
    "load_devices",
    "parse_config",
    "revision_token",
    "twin_device",
]

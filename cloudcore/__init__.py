"""The cloud daemon: CloudHub, EdgeController and DeviceController."""

from cloudcore.config import CloudCoreConfig, dump_config, load_config, parse_config
from cloudcore.core import CloudCore, CloudRouter
from cloudcore.devices import DeviceController, is_device_resource
from cloudcore.edge import EdgeController, is_pod_resource
from cloudcore.errors import (
    CloudCoreConfigError,
    CloudCoreError,
    CrdNotServedError,
    DeviceControllerError,
    DeviceMessageError,
    EdgeControllerError,
    KubeApiError,
    KubeConfigError,
    KubeConflictError,
    KubeNotFoundError,
    KubeUnavailableError,
    PodMessageError,
    SecretError,
    SecretNotFoundError,
    StreamServeError,
    WatchExpiredError,
)
from cloudcore.kube import ensure_crd, ensure_namespace, load_api_client
from cloudcore.lease import renew_node_lease
from cloudcore.nodes import AGENT_ROLE_LABEL, EDGE_ROLE_LABEL, NodeController
from cloudcore.objectsync import ObjectSyncStore, install_objectsync_crd, objectsync_name
from cloudcore.secrets import (
    load_or_create_ca,
    load_or_create_token_key,
    publish_token,
    read_ca,
    read_token_key,
)
from cloudcore.stream import CloudStream

__all__ = [
    "AGENT_ROLE_LABEL",
    "EDGE_ROLE_LABEL",
    "CloudCore",
    "CloudCoreConfig",
    "CloudCoreConfigError",
    "CloudCoreError",
    "CloudRouter",
    "CloudStream",
    "CrdNotServedError",
    "DeviceController",
    "DeviceControllerError",
    "DeviceMessageError",
    "EdgeController",
    "EdgeControllerError",
    "KubeApiError",
    "KubeConfigError",
    "KubeConflictError",
    "KubeNotFoundError",
    "KubeUnavailableError",
    "NodeController",
    "ObjectSyncStore",
    "PodMessageError",
    "SecretError",
    "SecretNotFoundError",
    "StreamServeError",
    "WatchExpiredError",
    "dump_config",
    "ensure_crd",
    "ensure_namespace",
    "install_objectsync_crd",
    "is_device_resource",
    "is_pod_resource",
    "load_api_client",
    "load_config",
    "load_or_create_ca",
    "load_or_create_token_key",
    "objectsync_name",
    "parse_config",
    "publish_token",
    "read_ca",
    "read_token_key",
    "renew_node_lease",
]

"""The edge-cloud link: beehive message model, CloudHub / EdgeHub, join and certificates."""

from cloudsync.errors import CloudSyncError, MessageFormatError
from cloudsync.message import (
    MAX_FRAME,
    Group,
    Header,
    Message,
    ObjectRef,
    Operation,
    ResourceType,
    Route,
    decode,
    encode,
    strip_node,
    with_node,
)

__all__ = [
    "MAX_FRAME",
    "CloudSyncError",
    "Group",
    "Header",
    "Message",
    "MessageFormatError",
    "ObjectRef",
    "Operation",
    "ResourceType",
    "Route",
    "decode",
    "encode",
    "strip_node",
    "with_node",
]

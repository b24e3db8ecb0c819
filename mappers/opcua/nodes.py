"""Where each property's node is, and what it holds: resolved once per session, in as few requests as can be.

A property names its node by ``nodeID`` (``ns=2;s=Boiler.Temp``, ``nsu=<uri>;i=7``) or by a browse path from
the Root folder (``browseName: 0:Objects/2:Boiler/2:Temperature``). On each connection the browse paths are
translated in one TranslateBrowsePathsToNodeIds request, then the DataType and ValueRank of every node are
read in one Read request: writes use the variant type the node declares, arrays are refused. A node that is
missing (or whose path does not resolve) is a property error, not a device error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from asyncua import Client, ua
from asyncua.common.node import Node
from asyncua.common.ua_utils import data_type_to_variant_type

from device_models import OpcUaVisitorConfig
from mappers.sdk import PropertyConfig

_SCALAR_RANKS = (-1, -2, -3)  # scalar, any (scalar or array), scalar or one dimension
_BUILT_IN_TYPES = range(1, 26)


@dataclass(frozen=True)
class NodeInfo:
    """A property's node on the server, or why it has none."""

    node: Node | None
    """The node; ``None`` when it could not be resolved (``problem`` says why)."""
    label: str
    """How the Device names the node (its nodeID or browse path), for messages."""
    variant_type: ua.VariantType | None = None
    """The variant type the node's DataType is encoded as; ``None`` when unknown."""
    array: bool = False
    """The node's ValueRank allows only arrays."""
    problem: str | None = None


def visitor_label(visitor: OpcUaVisitorConfig) -> str:
    """The node as the Device names it: its nodeID, else its browse path."""
    return visitor.node_id or f"browse path {visitor.browse_name}"


def relative_path(segments: Sequence[tuple[int, str]]) -> ua.RelativePath:
    """A browse path (namespace index, browse name per step) following hierarchical references."""
    return ua.RelativePath(
        Elements=[
            ua.RelativePathElement(
                ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
                IsInverse=False,
                IncludeSubtypes=True,
                TargetName=ua.QualifiedName(name, index),
            )
            for index, name in segments
        ]
    )


class NodeResolver:
    """Resolves properties' nodes on a connected client; remembers what each DataType is encoded as."""

    def __init__(self) -> None:
        self._encodings: dict[ua.NodeId, ua.VariantType | None] = {}

    async def resolve(self, client: Client, properties: Sequence[PropertyConfig]) -> dict[str, NodeInfo]:
        """Each property's :class:`NodeInfo`; raises asyncua's errors when the connection fails."""
        visitors = {prop.name: _visitor(prop) for prop in properties}
        ids: dict[str, ua.NodeId] = {}
        problems: dict[str, str] = {}
        namespaces: list[str] | None = None
        for name, visitor in visitors.items():
            if visitor.node_id is None:
                continue
            try:
                node_id = ua.NodeId.from_string(visitor.node_id)
            except (ua.UaError, ValueError) as exc:
                problems[name] = f"node id {visitor.node_id} cannot be parsed: {exc}"
                continue
            if isinstance(node_id, ua.ExpandedNodeId) and node_id.NamespaceUri:
                namespaces = namespaces if namespaces is not None else await client.get_namespace_array()
                if node_id.NamespaceUri not in namespaces:
                    problems[name] = f"namespace {node_id.NamespaceUri} is not on the server"
                    continue
                node_id = ua.NodeId(
                    node_id.Identifier, namespaces.index(node_id.NamespaceUri), node_id.NodeIdType
                )
            ids[name] = node_id
        await self._translate(client, visitors, ids, problems)
        return await self._describe(client, visitors, ids, problems)

    @staticmethod
    async def _translate(
        client: Client,
        visitors: dict[str, OpcUaVisitorConfig],
        ids: dict[str, ua.NodeId],
        problems: dict[str, str],
    ) -> None:
        paths = {
            name: path for name, visitor in visitors.items() if (path := visitor.browse_path) is not None
        }
        if not paths:
            return
        root = ua.NodeId(ua.ObjectIds.RootFolder)
        results = await client.translate_browsepaths(root, [relative_path(path) for path in paths.values()])
        for name, result in zip(paths, results, strict=True):
            if not result.StatusCode.is_good() or not result.Targets:
                problems[name] = (
                    f"browse path {visitors[name].browse_name} not found ({result.StatusCode.name})"
                )
                continue
            target = result.Targets[0].TargetId
            ids[name] = ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType)

    async def _describe(
        self,
        client: Client,
        visitors: dict[str, OpcUaVisitorConfig],
        ids: dict[str, ua.NodeId],
        problems: dict[str, str],
    ) -> dict[str, NodeInfo]:
        infos = {
            name: NodeInfo(None, visitor_label(visitors[name]), problem=problem)
            for name, problem in problems.items()
        }
        if not ids:
            return infos
        to_read = [
            ua.ReadValueId(NodeId=node_id, AttributeId=attribute)
            for node_id in ids.values()
            for attribute in (ua.AttributeIds.DataType, ua.AttributeIds.ValueRank)
        ]
        values = await client.uaclient.read(ua.ReadParameters(NodesToRead=to_read))
        for index, (name, node_id) in enumerate(ids.items()):
            data_type, rank = values[2 * index], values[2 * index + 1]
            label = visitor_label(visitors[name])
            if data_type.StatusCode is not None and data_type.StatusCode.is_bad():
                problem = f"node {label} cannot be used ({data_type.StatusCode.name})"
                infos[name] = NodeInfo(None, label, problem=problem)
                continue
            type_id = data_type.Value.Value if data_type.Value is not None else None
            encoding = await self._encoding(client, type_id) if isinstance(type_id, ua.NodeId) else None
            rank_value = rank.Value.Value if rank.Value is not None else -1
            array = isinstance(rank_value, int) and rank_value not in _SCALAR_RANKS
            infos[name] = NodeInfo(client.get_node(node_id), label, encoding, array)
        return infos

    async def _encoding(self, client: Client, data_type: ua.NodeId) -> ua.VariantType | None:
        if data_type in self._encodings:
            return self._encodings[data_type]
        encoding: ua.VariantType | None
        if data_type.NamespaceIndex == 0 and data_type.Identifier in _BUILT_IN_TYPES:
            encoding = ua.VariantType(data_type.Identifier)
        else:
            # A subtype (UtcTime, Duration, an enumeration...): its built-in supertype says how it is encoded.
            try:
                encoding = await data_type_to_variant_type(client.get_node(data_type))
            except (ua.UaError, ValueError):
                encoding = None
        self._encodings[data_type] = encoding
        return encoding


def _visitor(prop: PropertyConfig) -> OpcUaVisitorConfig:
    visitor = prop.visitor
    if not isinstance(visitor, OpcUaVisitorConfig):  # checked when the driver was made
        raise TypeError(f"property {prop.name} has no OPC-UA visitor")
    return visitor

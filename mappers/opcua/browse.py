"""What a server offers, for writing a Device YAML: its variables with node id, browse path, type and access.

The Objects folder is walked through hierarchical references (objects and folders), one Browse request per
object; the variables found are described with one Read request (DataType, ValueRank, UserAccessLevel) and
the names of data types that are not built in with one more. The standard nodes of namespace 0 (the
``Server`` object and its hundreds of diagnostics) are left out unless asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from asyncua import Client, ua
from asyncua.common.node import Node

from device_models import OPCUA, OpcUaProtocolConfig, parse_protocol_config
from mappers.opcua.driver import OpcUaProtocol, OpcUaSettings
from mappers.opcua.session import CONNECTION_ERRORS, SessionOptions, open_session
from mappers.sdk import DeviceUnreachableError

_CONTAINERS = ua.NodeClass.Object
_MAX_DEPTH = 16
_MAX_OBJECTS = 5000
_ACCESS = {0: "none", 1: "read", 2: "write", 3: "read/write"}


@dataclass(frozen=True)
class VariableRow:
    """A variable of the server, as a Device's visitor names it."""

    node_id: str
    browse_path: str
    data_type: str
    access: str
    """What this session's user may do: read, write, read/write or none."""


@dataclass(frozen=True)
class _Found:
    node: Node
    path: str


async def browse_endpoint(
    config: OpcUaProtocolConfig, settings: OpcUaSettings, *, standard: bool = False
) -> list[VariableRow]:
    """Open a session as ``config`` says and list the server's variables (sorted by browse path).

    Raises :class:`~mappers.sdk.DeviceUnreachableError` or :class:`~mappers.sdk.DeviceRejectedError`.
    """
    protocol = OpcUaProtocol(settings)
    options = SessionOptions(protocol.certificate, timeout=settings.timeout, keepalive=settings.keepalive)
    client = await open_session(config.url, config, options)
    try:
        return await browse_variables(client, standard=standard)
    except CONNECTION_ERRORS as exc:
        raise DeviceUnreachableError(config.url, f"browsing failed: {exc}") from exc
    finally:
        with contextlib.suppress(*CONNECTION_ERRORS):
            await client.disconnect()


async def browse_table(
    config_data: dict[str, Any], settings: OpcUaSettings, *, standard: bool = False
) -> list[str]:
    """``browse_endpoint`` for a command line: configData as a Device holds it in, table lines out.

    Raises :class:`~device_models.ModelValidationError` naming a bad field, or the SDK's connection errors.
    """
    config = parse_protocol_config(OPCUA, config_data)
    if not isinstance(config, OpcUaProtocolConfig):  # parse_protocol_config returns the protocol's type
        raise TypeError(f"expected an OPC-UA configuration, parsed {type(config).__name__}")
    return format_table(await browse_endpoint(config, settings, standard=standard))


async def browse_variables(client: Client, *, standard: bool = False) -> list[VariableRow]:
    """The variables under the Objects folder of a connected client's server."""
    objects = [_Found(client.nodes.objects, "0:Objects")]
    variables: list[_Found] = []
    seen = {client.nodes.objects.nodeid}
    for _depth in range(_MAX_DEPTH):
        if not objects or len(seen) > _MAX_OBJECTS:
            break
        children = await asyncio.gather(
            *(
                found.node.get_children_descriptions(
                    refs=ua.ObjectIds.HierarchicalReferences,
                    nodeclassmask=ua.NodeClass.Object | ua.NodeClass.Variable,
                )
                for found in objects
            )
        )
        next_level: list[_Found] = []
        for parent, descriptions in zip(objects, children, strict=True):
            for description in descriptions:
                node_id = description.NodeId
                if node_id in seen or (node_id.NamespaceIndex == 0 and not standard):
                    continue
                seen.add(node_id)
                name = description.BrowseName
                found = _Found(client.get_node(node_id), f"{parent.path}/{name.NamespaceIndex}:{name.Name}")
                if description.NodeClass == _CONTAINERS:
                    next_level.append(found)
                else:
                    variables.append(found)
        objects = next_level
    return await _describe(client, sorted(variables, key=lambda found: found.path))


async def _describe(client: Client, variables: list[_Found]) -> list[VariableRow]:
    if not variables:
        return []
    attributes = (ua.AttributeIds.DataType, ua.AttributeIds.ValueRank, ua.AttributeIds.UserAccessLevel)
    to_read = [
        ua.ReadValueId(NodeId=found.node.nodeid, AttributeId=attribute)
        for found in variables
        for attribute in attributes
    ]
    values = await client.uaclient.read(ua.ReadParameters(NodesToRead=to_read))
    described = [values[index : index + len(attributes)] for index in range(0, len(values), len(attributes))]
    type_ids = {
        data_type.Value.Value
        for data_type, _rank, _access in described
        if data_type.Value is not None and isinstance(data_type.Value.Value, ua.NodeId)
    }
    names = await _type_names(client, type_ids)
    rows = []
    for found, (data_type, rank, access) in zip(variables, described, strict=True):
        type_id = data_type.Value.Value if data_type.Value is not None else None
        type_name = names.get(type_id, "?") if isinstance(type_id, ua.NodeId) else "?"
        rank_value = rank.Value.Value if rank.Value is not None else -1
        if isinstance(rank_value, int) and rank_value >= 0:
            type_name += "[]"
        level = access.Value.Value if access.Value is not None and isinstance(access.Value.Value, int) else 0
        rows.append(VariableRow(found.node.nodeid.to_string(), found.path, type_name, _ACCESS[level & 3]))
    return rows


async def _type_names(client: Client, type_ids: set[ua.NodeId]) -> dict[ua.NodeId, str]:
    ids = list(type_ids)
    to_read = [ua.ReadValueId(NodeId=type_id, AttributeId=ua.AttributeIds.BrowseName) for type_id in ids]
    values = await client.uaclient.read(ua.ReadParameters(NodesToRead=to_read)) if ids else []
    return {
        type_id: value.Value.Value.Name
        if value.Value is not None and value.Value.Value
        else type_id.to_string()
        for type_id, value in zip(ids, values, strict=True)
    }


def format_table(rows: list[VariableRow]) -> list[str]:
    """The rows as aligned text lines under a header (NODE ID, BROWSE PATH, DATA TYPE, ACCESS)."""
    table = [("NODE ID", "BROWSE PATH", "DATA TYPE", "ACCESS")] + [
        (row.node_id, row.browse_path, row.data_type, row.access) for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(3)]
    return [
        f"{node:<{widths[0]}}  {path:<{widths[1]}}  {kind:<{widths[2]}}  {access}"
        for node, path, kind, access in table
    ]

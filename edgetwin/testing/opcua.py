"""A simulated OPC-UA device: a real asyncua 2.1 server on a free port, with one object of variables.

``OpcUaSimulator([Variable("temperature", ua.VariantType.Double, 21.5), ...])`` serves each variable under
the object ``Device`` (or ``object_name``) as ``ns=<n>;s=Device.<name>`` (browse path
``0:Objects/<n>:Device/<n>:<name>``), where ``<n>`` is 2, the first namespace after the server's own. A test
reads and sets values directly (``await sim.set("temperature", 22.0)`` notifies subscribers);
:meth:`~OpcUaSimulator.stop` takes the device off the network and keeps its values, :meth:`start` brings it
back with them, on the same port.

Writes from clients follow OPC-UA's rules, answered with the status codes a real device uses: a variable
that is not writable answers BadNotWritable, one the user may not write BadUserAccessDenied, a value outside
the variable's range BadOutOfRange, a variant of the wrong type BadTypeMismatch.

Security: :class:`Security` adds Basic256Sha256 endpoints with a server certificate; the client certificates
listed in ``trusted`` (or added with :meth:`trust`) are accepted, others are answered BadCertificateUntrusted.
``users`` requires a user name and password (anonymous sessions are refused). ``subscriptions=False`` makes a
server that refuses to create subscriptions (clients must poll).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.address_space import AttributeService
from asyncua.server.internal_server import InternalServer
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgetwin.testing.ports import free_port
from mappers.opcua import ClientCertificate, generate_certificate, load_certificate

__all__ = ["NAMESPACE_URI", "OBJECT_NAME", "OpcUaSimulator", "Security", "Variable", "server_certificate"]

OBJECT_NAME = "Device"
NAMESPACE_URI = "urn:edgetwin:simulator"
_APPLICATION_URI = "urn:edgetwin:simulator:server"
_SERVER = User(role=UserRole.Admin)  # the server's own writes: no access checks


@dataclass(frozen=True)
class Variable:
    """A variable of the simulated device: its browse name, variant type, first value and write rules."""

    name: str
    type: ua.VariantType
    value: Any
    writable: bool = True
    """False: clients' writes are answered BadNotWritable (the AccessLevel lacks CurrentWrite)."""
    user_writable: bool = True
    """False: writable in principle, but clients' writes are answered BadUserAccessDenied."""
    minimum: float | None = None
    """Writes below are answered BadOutOfRange."""
    maximum: float | None = None
    """Writes above are answered BadOutOfRange."""
    array: bool = False
    """The value is a list (ValueRank 1)."""
    declared: ua.VariantType | None = None
    """The DataType the node declares, when it is not the value's type (a device with a bug)."""


@dataclass(frozen=True)
class Security:
    """Basic256Sha256 endpoints (``modes``), the server's certificate, and the client certificates trusted."""

    certificate: ClientCertificate
    modes: Sequence[ua.SecurityPolicyType] = (ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,)
    trusted: Sequence[Path] = field(default_factory=tuple)
    allow_none: bool = False
    """Also offer the unsecured endpoint (policy None)."""


def server_certificate(directory: Path) -> ClientCertificate:
    """A server certificate and key for the simulator, made in ``directory``."""
    return generate_certificate(
        directory / "server.der",
        directory / "server.key.pem",
        application_uri=_APPLICATION_URI,
        common_name="edgetwin OPC-UA simulator",
        server=True,
    )


class _DeviceAttributes(AttributeService):  # type: ignore[misc]  # asyncua is checked as untyped
    """Clients' writes of variable values, with the status codes of a real device's rules."""

    def __init__(self, server: InternalServer, rules: dict[ua.NodeId, Variable]) -> None:
        super().__init__(server.aspace)
        self._rules = rules

    async def write(self, params: ua.WriteParameters, user: User = _SERVER) -> list[ua.StatusCode]:
        results: list[ua.StatusCode] = []
        for item in params.NodesToWrite:
            rule = self._rules.get(item.NodeId)
            refused = None if user.role is UserRole.Admin or rule is None else _refusal(rule, item)
            if refused is not None:
                results.append(ua.StatusCode(refused))
                continue
            single = ua.WriteParameters(NodesToWrite=[item])
            results.extend(await super().write(single, user))
        return results


def _refusal(rule: Variable, item: ua.WriteValue) -> int | None:
    if item.AttributeId != ua.AttributeIds.Value:
        return None
    if not rule.writable:
        return int(ua.StatusCodes.BadNotWritable)
    if not rule.user_writable:
        return int(ua.StatusCodes.BadUserAccessDenied)
    value = item.Value.Value.Value if item.Value is not None and item.Value.Value is not None else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if rule.minimum is not None and value < rule.minimum:
            return int(ua.StatusCodes.BadOutOfRange)
        if rule.maximum is not None and value > rule.maximum:
            return int(ua.StatusCodes.BadOutOfRange)
    return None


class _Users:
    """User name + password logins (and anonymous sessions unless logins are required)."""

    def __init__(self, users: dict[str, str] | None) -> None:
        self._users = users

    def get_user(
        self,
        iserver: InternalServer,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if self._users is None:
            return User(role=UserRole.User, name=username)
        if username is not None and self._users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


class OpcUaSimulator:
    """Run with ``async with OpcUaSimulator(variables) as sim:``; ``sim.url`` is its endpoint."""

    def __init__(
        self,
        variables: Sequence[Variable],
        *,
        port: int | None = None,
        security: Security | None = None,
        users: dict[str, str] | None = None,
        subscriptions: bool = True,
        object_name: str = OBJECT_NAME,
        path: str = "edgetwin/simulator",
    ) -> None:
        self.port = port or free_port()
        self.url = f"opc.tcp://127.0.0.1:{self.port}/{path}"
        self.object_name = object_name
        self.variables = {variable.name: variable for variable in variables}
        self.security = security
        self.users = users
        self.subscriptions = subscriptions
        self.namespace_index = 2  # the first namespace registered after the server's own (0 and 1)
        self._values: dict[str, ua.Variant] = {
            variable.name: ua.Variant(variable.value, variable.type, is_array=variable.array)
            for variable in variables
        }
        self._trusted: set[bytes] = set()
        for trusted in security.trusted if security else ():
            self.trust(trusted)
        self._server: Server | None = None

    @property
    def running(self) -> bool:
        """True while the device answers."""
        return self._server is not None

    def node_id(self, name: str) -> str:
        """The node id of a variable, as a Device YAML's ``nodeID``."""
        return f"ns={self.namespace_index};s={self.object_name}.{name}"

    def browse_path(self, name: str) -> str:
        """The browse path of a variable from the Root folder, as a Device YAML's ``browseName``."""
        ns = self.namespace_index
        return f"0:Objects/{ns}:{self.object_name}/{ns}:{name}"

    def trust(self, certificate: Path) -> None:
        """Accept clients presenting this certificate (DER or PEM), from now on."""
        self._trusted.add(load_certificate(certificate).public_bytes(serialization.Encoding.DER))

    async def start(self) -> None:
        """Put the device on the network (again), with the values it had."""
        if self._server is not None:
            return
        server = Server(user_manager=_Users(self.users))
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("edgetwin OPC-UA simulator")
        server.disable_clock()
        await server.set_application_uri(_APPLICATION_URI)
        self._secure(server)
        if not self.subscriptions:
            server.iserver.max_subscriptions = 0
        self.namespace_index = await server.register_namespace(NAMESPACE_URI)
        await self._populate(server)
        await server.start()
        self._server = server

    def _secure(self, server: Server) -> None:
        policies = [ua.SecurityPolicyType.NoSecurity]
        if self.security is not None:
            policies = list(self.security.modes)
            if self.security.allow_none:
                policies.append(ua.SecurityPolicyType.NoSecurity)
            server.set_certificate_validator(self._validate)
        server.set_security_policy(policies)
        if self.users is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken])

    async def _populate(self, server: Server) -> None:
        if self.security is not None:
            await server.load_certificate(str(self.security.certificate.certificate))
            await server.load_private_key(str(self.security.certificate.private_key))
        ns = self.namespace_index
        device = await server.nodes.objects.add_object(
            ua.NodeId(self.object_name, ns), ua.QualifiedName(self.object_name, ns)
        )
        rules: dict[ua.NodeId, Variable] = {}
        for name, variable in self.variables.items():
            node_id = ua.NodeId(f"{self.object_name}.{name}", ns)
            data_type = ua.NodeId(variable.declared.value) if variable.declared is not None else None
            node = await device.add_variable(
                node_id, ua.QualifiedName(name, ns), self._values[name], datatype=data_type
            )
            if variable.writable:
                await node.set_writable(True)
            if not variable.user_writable:
                await node.unset_attr_bit(ua.AttributeIds.UserAccessLevel, ua.AccessLevel.CurrentWrite)
            rules[node_id] = variable
        server.iserver.attribute_service = _DeviceAttributes(server.iserver, rules)

    async def _validate(self, certificate: x509.Certificate, application: ua.ApplicationDescription) -> None:
        if certificate.public_bytes(serialization.Encoding.DER) not in self._trusted:
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if application.ApplicationUri not in names.get_values_for_type(x509.UniformResourceIdentifier):
            raise ServiceError(ua.StatusCodes.BadCertificateUriInvalid)

    async def stop(self) -> None:
        """Take the device off the network, keeping its values; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        for name in self.variables:
            self._values[name] = _variant(server, self._node_id(name))
        await server.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _node_id(self, name: str) -> ua.NodeId:
        if name not in self.variables:
            raise KeyError(f"the simulator has no variable {name!r}")
        return ua.NodeId(f"{self.object_name}.{name}", self.namespace_index)

    async def set(self, name: str, value: Any) -> None:
        """Give a variable a new value (of its type), as the device itself would; subscribers see it."""
        variable = self.variables[name]
        variant = ua.Variant(value, variable.type, is_array=variable.array)
        if self._server is None:
            self._values[name] = variant
            return
        await self._server.write_attribute_value(
            self._node_id(name), ua.DataValue(variant, SourceTimestamp=datetime.datetime.now(datetime.UTC))
        )

    async def get(self, name: str) -> Any:
        """A variable's current value."""
        return (await self.get_variant(name)).Value

    async def get_variant(self, name: str) -> ua.Variant:
        """A variable's current value with its variant type (what a client's write stored)."""
        if self._server is None:
            return self._values[name]
        return _variant(self._server, self._node_id(name))


def _variant(server: Server, node_id: ua.NodeId) -> ua.Variant:
    value = server.read_attribute_value(node_id).Value
    if value is None:
        raise LookupError(f"no value at {node_id}")
    return value

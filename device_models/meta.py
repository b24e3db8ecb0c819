"""The Kubernetes building blocks of the device models: object metadata, references and conditions."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field

from device_models.base import KubeModel

# RFC 1123 subdomain, what the API server requires of a custom object's name.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_SUBDOMAIN_MAX = 253
DEFAULT_NAMESPACE = "default"


def _dns_subdomain(value: str) -> str:
    if len(value) > _DNS_SUBDOMAIN_MAX or not _DNS_SUBDOMAIN.match(value):
        raise ValueError(
            "is not a valid Kubernetes name (lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit, at most 253 characters)"
        )
    return value


ObjectName = Annotated[str, AfterValidator(_dns_subdomain)]


class ObjectMeta(KubeModel):
    """The part of Kubernetes' ObjectMeta edgetwin reads; any other metadata field is kept as it is."""

    model_config = ConfigDict(extra="allow")

    name: ObjectName
    namespace: ObjectName = DEFAULT_NAMESPACE
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None


class LocalObjectReference(KubeModel):
    """A reference to an object in the same namespace, by name."""

    name: ObjectName


class Condition(KubeModel):
    """A Kubernetes-style status condition; edgetwin reports whether a Device is valid this way."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None


class KubeObject(KubeModel):
    """A Kubernetes object: apiVersion, kind and metadata, with its id and its YAML form."""

    api_version: str
    kind: str
    metadata: ObjectMeta

    @property
    def id(self) -> str:
        """``<namespace>/<name>``: the id of twins and topics for a Device."""
        return f"{self.metadata.namespace}/{self.metadata.name}"

    @property
    def label(self) -> str:
        """``<Kind> <namespace>/<name>``, how problems and logs name the object."""
        return f"{self.kind} {self.id}"

    @property
    def name(self) -> str:
        """``metadata.name``."""
        return self.metadata.name

    @property
    def namespace(self) -> str:
        """``metadata.namespace``."""
        return self.metadata.namespace

    def to_manifest(self) -> dict[str, Any]:
        """The object as Kubernetes / KubeEdge YAML holds it (camelCase names, empty fields omitted)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

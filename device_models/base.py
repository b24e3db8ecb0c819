"""Bases of the models: Kubernetes-shaped objects (Go's ``omitempty`` on dump) and protocol configData."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer
from pydantic.alias_generators import to_camel


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, list | dict) and not value)


class KubeModel(BaseModel):
    """Python names in snake_case, YAML names in camelCase (KubeEdge's), unknown fields rejected.

    Dumping drops ``None``, empty lists and empty mappings, as KubeEdge's Go types do with ``omitempty``, so
    ``model_dump(by_alias=True, exclude_none=True)`` gives back the shape users write. Field docstrings become
    the descriptions of the generated CRD schema (``kubectl explain``).
    """

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_attribute_docstrings=True
    )

    @model_serializer(mode="wrap")
    def _omit_empty(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if not _is_empty(value)}


class ConfigModel(BaseModel):
    """A typed reading of a free-form ``configData`` mapping of one protocol.

    Values are coerced the way KubeEdge users write them (``port: "5502"`` is the number 5502). Keys the
    protocol does not know are kept in ``model_extra`` (and reported as warnings), since configData is
    free-form in KubeEdge and other mappers may read them.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        frozen=True,
        use_attribute_docstrings=True,
    )

    @property
    def unknown_keys(self) -> list[str]:
        """The configData keys this protocol does not use."""
        return sorted(self.model_extra or {})

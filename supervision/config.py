"""What edgecore.yaml and cloudcore.yaml share: KubeEdge's camelCase sections, unknown fields named."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = ["ConfigSection", "dump_yaml", "field_path", "warn_unknown_fields"]


class ConfigSection(BaseModel):
    """A section of a KubeEdge config file: camelCase names; unknown fields kept (KubeEdge has many that
    edgetwin does not use), listed by :meth:`unknown_fields`."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", validate_assignment=True
    )

    def unknown_fields(self, prefix: str = "") -> list[str]:
        """Dotted paths (KubeEdge's names) of the fields in the file that edgetwin does not use."""
        found = [f"{prefix}{key}" for key in (self.model_extra or {})]
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, ConfigSection):
                found += value.unknown_fields(f"{prefix}{info.alias or name}.")
        return found


def warn_unknown_fields(path: Path, config: ConfigSection, log: logging.Logger) -> None:
    """Log on ``log`` (the daemon's config logger) ONE warning listing the fields of ``path`` that edgetwin
    ignores; none: nothing logged."""
    unknown = config.unknown_fields()
    if unknown:
        log.warning(
            "%s: ignoring %d field(s) edgetwin does not use (KubeEdge settings, or a typo): %s",
            path,
            len(unknown),
            ", ".join(unknown),
            extra={"unknown_fields": unknown},
        )


def dump_yaml(config: ConfigSection) -> str:
    """The configuration as YAML, KubeEdge's field names, every default written out."""
    return yaml.safe_dump(config.model_dump(mode="json", by_alias=True), sort_keys=False)


def field_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a dotted path with list indexes (``modules.edged.nodeLabels[0]``)."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path or "<document>"

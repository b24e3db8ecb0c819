"""Reading Device / DeviceModel documents (v1beta1, or v1alpha2 converted to v1beta1) from YAML or JSON text,
files and directories, with every problem reported by file, object, field path and value.

Two levels: ``validate_*`` return a :class:`DocumentReport` per document (the ``edgetwin validate`` view,
warnings included); ``load_*`` and :func:`parse_document` return the objects or raise
:class:`ModelValidationError` listing every error.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from device_models.checks import check_device, check_device_against_model, check_device_model
from device_models.device import Device
from device_models.device_model import API_VERSION, DeviceModel
from device_models.errors import ModelValidationError
from device_models.meta import DEFAULT_NAMESPACE
from device_models.problems import NO_VALUE, Problem, Severity, has_errors, problems_from_validation_error
from device_models.v1alpha2 import API_VERSION as V1ALPHA2
from device_models.v1alpha2 import (
    DeviceModelV1Alpha2,
    DeviceV1Alpha2,
    device_from_v1alpha2,
    device_model_from_v1alpha2,
)

DeviceObject = Device | DeviceModel
"""What the loader gives back: always the v1beta1 models."""

YAML_SUFFIXES = (".yaml", ".yml", ".json")
_KINDS = ("Device", "DeviceModel")
_LIST_KINDS = ("List", "DeviceList", "DeviceModelList")


class _KubeYamlLoader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: timestamps stay strings (PyYAML would make them datetimes)."""


_KubeYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclasses.dataclass(frozen=True)
class DocumentReport:
    """The outcome of reading one document: the object (None when invalid) and its problems."""

    source: str
    """The file (or ``<text>``) the document came from."""
    index: int
    """Position of the document in its source, from 0."""
    label: str
    """How the object is named: ``Device default/thermostat-01``."""
    obj: DeviceObject | None
    problems: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the document is valid (warnings allowed)."""
        return self.obj is not None and not has_errors(self.problems)


def parse_document(document: Mapping[str, Any]) -> DeviceObject:
    """Parse one object (a mapping, as from YAML or the Kubernetes API) into a v1beta1 Device / DeviceModel.

    v1alpha2 objects are converted. Checks the object on its own (:func:`check_device`,
    :func:`check_device_model`); raises :class:`ModelValidationError` listing every error.
    """
    obj, _label, problems = _parse(document)
    errors = [problem for problem in problems if problem.is_error]
    if errors or obj is None:
        raise ModelValidationError(errors)
    return obj


def _parse(
    document: object, other_kinds: Severity = "error"
) -> tuple[DeviceObject | None, str, list[Problem]]:
    if not isinstance(document, Mapping):
        return None, "document", [Problem("", "is not a Kubernetes object (a mapping)", document)]
    label = _raw_label(document)
    kind, api_version = document.get("kind", NO_VALUE), document.get("apiVersion", NO_VALUE)
    if kind not in _KINDS:
        reason = "is not Device or DeviceModel (edgetwin reads devices.kubeedge.io objects only)"
        return None, label, [Problem("kind", reason, kind, other_kinds, obj=label)]
    if api_version not in (API_VERSION, V1ALPHA2):
        reason = f"is not one of {API_VERSION}, {V1ALPHA2}"
        return None, label, [Problem("apiVersion", reason, api_version, obj=label)]
    try:
        obj = _MODELS[api_version, kind](document)
    except ValidationError as exc:
        return (
            None,
            label,
            [problem.located(obj=label) for problem in problems_from_validation_error(exc, document)],
        )
    label = obj.label
    if api_version == V1ALPHA2:
        # Checks run on the converted object; the label tells the user why paths look like v1beta1.
        label += f" (converted from {V1ALPHA2})"
    problems = check_device(obj) if isinstance(obj, Device) else check_device_model(obj)
    return obj, label, [dataclasses.replace(problem, obj=label) for problem in problems]


def _raw_label(document: Mapping[str, Any]) -> str:
    kind = document.get("kind")
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    namespace = metadata.get("namespace", DEFAULT_NAMESPACE) if isinstance(metadata, Mapping) else None
    if isinstance(kind, str) and isinstance(name, str):
        return f"{kind} {namespace}/{name}"
    return kind if isinstance(kind, str) and kind else "document"


_MODELS: dict[tuple[object, object], Callable[[Mapping[str, Any]], DeviceObject]] = {
    (API_VERSION, "Device"): Device.model_validate,
    (API_VERSION, "DeviceModel"): DeviceModel.model_validate,
    (V1ALPHA2, "Device"): lambda document: device_from_v1alpha2(DeviceV1Alpha2.model_validate(document)),
    (V1ALPHA2, "DeviceModel"): lambda document: device_model_from_v1alpha2(
        DeviceModelV1Alpha2.model_validate(document)
    ),
}


def validate_text(
    text: str, source: str = "<text>", *, cross_check: bool = True, skip_other_kinds: bool = False
) -> list[DocumentReport]:
    """Read every document of a YAML (or JSON) text; one report per Device / DeviceModel found.

    ``kind: List`` documents (``kubectl get -o yaml``) are read item by item. Other kinds are errors, or
    warnings with ``skip_other_kinds``. With ``cross_check``, Devices are checked against the DeviceModels
    among the documents (:func:`cross_check_reports`).
    """
    other_kinds: Severity = "warning" if skip_other_kinds else "error"
    reports: list[DocumentReport] = []
    index = 0
    try:
        for index, document in enumerate(yaml.load_all(text, Loader=_KubeYamlLoader)):
            if document is not None:
                reports.extend(_reports(document, source, index, other_kinds))
    except yaml.YAMLError as exc:
        problem = Problem("", _yaml_reason(exc), source=source)
        reports.append(DocumentReport(source, index, "document", None, (problem,)))
    return cross_check_reports(reports) if cross_check else reports


def _reports(document: object, source: str, index: int, other_kinds: Severity) -> list[DocumentReport]:
    if isinstance(document, Mapping) and document.get("kind") in _LIST_KINDS:
        items = document.get("items")
        if not isinstance(items, list):
            problem = Problem("items", "is not a list", items, source=source)
            return [DocumentReport(source, index, str(document["kind"]), None, (problem,))]
        return [
            _report(item, source, index, other_kinds, prefix=f"items[{position}]")
            for position, item in enumerate(items)
        ]
    return [_report(document, source, index, other_kinds)]


def _report(
    document: object, source: str, index: int, other_kinds: Severity, prefix: str = ""
) -> DocumentReport:
    obj, label, problems = _parse(document, other_kinds)
    located = [
        dataclasses.replace(problem, source=source, path=_join(prefix, problem.path)) for problem in problems
    ]
    return DocumentReport(source, index, label, obj, tuple(located))


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path
    return f"{prefix}.{path}" if path else prefix


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return f"is not valid YAML{where}: {problem}"


def validate_paths(
    paths: Iterable[str | os.PathLike[str]], *, cross_check: bool = True, skip_other_kinds: bool = False
) -> list[DocumentReport]:
    """Read files and directories (recursively: every .yaml, .yml and .json file, in name order).

    Devices are cross-checked against the DeviceModels found among all the files. Unreadable or missing
    paths are reported as errors, not raised.
    """
    reports: list[DocumentReport] = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(
                file for file in path.rglob("*") if file.suffix in YAML_SUFFIXES and file.is_file()
            )
            if not files:
                reports.append(_path_problem(path, "contains no .yaml, .yml or .json file"))
        elif path.exists():
            files = [path]
        else:
            reports.append(_path_problem(path, "does not exist"))
            files = []
        for file in files:
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                reports.append(_path_problem(file, f"cannot be read: {exc}"))
                continue
            reports.extend(
                validate_text(text, str(file), cross_check=False, skip_other_kinds=skip_other_kinds)
            )
    return cross_check_reports(reports) if cross_check else reports


def _path_problem(path: Path, reason: str) -> DocumentReport:
    return DocumentReport(str(path), 0, "path", None, (Problem("", reason, source=str(path)),))


def cross_check_reports(reports: Sequence[DocumentReport]) -> list[DocumentReport]:
    """Add the problems found between documents: objects defined twice, and each Device checked against its
    DeviceModel (:func:`check_device_against_model`), a warning when the model is not among them."""
    first_seen: dict[tuple[str, str], DocumentReport] = {}
    models: dict[str, DeviceModel] = {}
    checked: list[DocumentReport] = []
    for report in reports:
        extra: list[Problem] = []
        if report.obj is not None:
            key = (report.obj.kind, report.obj.id)
            if key in first_seen:
                extra.append(
                    Problem(
                        "metadata.name",
                        f"is defined twice (also in {first_seen[key].source})",
                        report.obj.name,
                    )
                )
            first_seen.setdefault(key, report)
            if isinstance(report.obj, DeviceModel):
                models.setdefault(report.obj.id, report.obj)
        checked.append(_with(report, extra))
    return [_with(report, _against_model(report.obj, models)) for report in checked]


def _against_model(obj: DeviceObject | None, models: Mapping[str, DeviceModel]) -> list[Problem]:
    if not isinstance(obj, Device):
        return []
    model = models.get(obj.model_id)
    if model is None:
        return [
            Problem(
                "spec.deviceModelRef.name",
                "is not among the DeviceModels given; the cross-checks with it were skipped",
                obj.spec.device_model_ref.name,
                "warning",
            )
        ]
    return check_device_against_model(obj, model)


def _with(report: DocumentReport, problems: Sequence[Problem]) -> DocumentReport:
    if not problems:
        return report
    located = tuple(
        dataclasses.replace(problem, source=report.source, obj=report.label) for problem in problems
    )
    return dataclasses.replace(report, problems=report.problems + located)


def _raise_errors(reports: Sequence[DocumentReport]) -> list[DeviceObject]:
    errors = [problem for report in reports for problem in report.problems if problem.is_error]
    if errors:
        raise ModelValidationError(errors)
    return [report.obj for report in reports if report.obj is not None]


def load_text(text: str, source: str = "<text>") -> list[DeviceObject]:
    """The Devices and DeviceModels of a YAML / JSON text; raises :class:`ModelValidationError` listing every
    error (including cross-check errors between them)."""
    return _raise_errors(validate_text(text, source))


def load_documents(*paths: str | os.PathLike[str]) -> list[DeviceObject]:
    """The Devices and DeviceModels of files and directories (see :func:`validate_paths`); raises
    :class:`ModelValidationError` listing every error."""
    return _raise_errors(validate_paths(paths))


def dump_documents(objects: Iterable[DeviceObject]) -> str:
    """A multi-document YAML text of ``objects``, in KubeEdge's shape (camelCase, empty fields omitted)."""
    return yaml.safe_dump_all([obj.to_manifest() for obj in objects], sort_keys=False, allow_unicode=True)

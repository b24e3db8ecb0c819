"""The Kubernetes API fixture, through kubectl and the official Python client, on every available backend."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch

from edgetwin.testing import wait_for
from edgetwin.testing.kubeapi import (
    BackendUnavailableError,
    KubeApi,
    KubeApiStartError,
    find_etcd,
    real_backend_available,
    resolve_backend,
    start_kube_api,
)
from tests.fixtures.hygiene import child_processes

REPO = Path(__file__).resolve().parents[2]
CRDS = [
    REPO / "device_models" / "crds" / "devices_v1beta1_device.yaml",
    REPO / "device_models" / "crds" / "devices_v1beta1_devicemodel.yaml",
]
EXAMPLE = REPO / "examples" / "modbus-tcp-thermostat.yaml"
GROUP, VERSION, DEVICES = "devices.kubeedge.io", "v1beta1", "devices"
DEVICE = "thermostat-01"
SETPOINT = ".spec.properties[?(@.name=='setpoint')].desired.value"

pytestmark = pytest.mark.kube
needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


# -- helpers -------------------------------------------------------------------------------------------------


async def kubectl(api: KubeApi, *args: str, env: dict[str, str] | None = None) -> str:
    """Run kubectl against ``api``; its stdout (the test fails with its stderr on a non-zero exit)."""
    return await api.run_kubectl(*args, env=env)


@contextlib.asynccontextmanager
async def kubectl_lines(api: KubeApi, *args: str) -> AsyncIterator[list[str]]:
    """Run a long-lived kubectl (``get -w``), collecting its output lines; kill it on exit."""
    process = await asyncio.create_subprocess_exec(
        *api.kubectl(*args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    lines: list[str] = []

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            lines.append(line.decode())  # noqa: PERF401 - the test reads the list while it grows

    reader = asyncio.create_task(read())
    try:
        yield lines
    finally:
        process.kill()
        await process.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def example_in(namespace: str, directory: Path) -> Path:
    """A copy of the thermostat example with its objects moved to ``namespace``."""
    documents = list(yaml.safe_load_all(EXAMPLE.read_text()))
    for document in documents:
        document["metadata"]["namespace"] = namespace
    path = directory / EXAMPLE.name
    path.write_text(yaml.safe_dump_all(documents))
    return path


def sed_editor(directory: Path, old: str, new: str) -> dict[str, str]:
    """Environment for ``kubectl edit`` whose editor (sed) changes the desired value ``old`` to ``new``."""
    script = directory / "editor.sh"
    script.write_text(f'#!/bin/sh\nsed -i \'s/^\\( *value: \\)"{old}"$/\\1"{new}"/\' "$1"\n')
    script.chmod(0o755)
    return {"EDITOR": str(script)}


def setpoint(device: dict[str, Any]) -> str | None:
    """The desired value of the example's setpoint property."""
    for prop in device["spec"]["properties"]:
        if prop["name"] == "setpoint":
            value: str | None = prop.get("desired", {}).get("value")
            return value
    return None


def device_body(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A small Device of the project's CRD."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Device",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "deviceModelRef": {"name": "thermostat-model"},
            "nodeName": "edge-node-1",
            "properties": [{"name": "setpoint", "desired": {"value": "20"}}],
        },
    }


def _as_object(answer: object) -> dict[str, Any]:
    assert isinstance(answer, dict), answer
    return answer


class Devices:
    """The Devices of one namespace through the Python client's custom-object calls (which answer dicts)."""

    def __init__(self, api_client: k8s.ApiClient, namespace: str) -> None:
        self.api = k8s.CustomObjectsApi(api_client)
        self.resource = (GROUP, VERSION, namespace, DEVICES)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return _as_object(self.api.create_namespaced_custom_object(*self.resource, body))

    def get(self, name: str) -> dict[str, Any]:
        return _as_object(self.api.get_namespaced_custom_object(*self.resource, name))

    def patch(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return _as_object(self.api.patch_namespaced_custom_object(*self.resource, name, body))

    def patch_status(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return _as_object(self.api.patch_namespaced_custom_object_status(*self.resource, name, body))

    def replace(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return _as_object(self.api.replace_namespaced_custom_object(*self.resource, name, body))

    def select(self, label_selector: str) -> dict[str, Any]:
        return _as_object(
            self.api.list_namespaced_custom_object(*self.resource, label_selector=label_selector)
        )

    def watch(
        self, resource_version: str, until: Callable[[dict[str, Any]], bool], timeout: int = 20
    ) -> list[dict[str, Any]]:
        """Watch from ``resource_version`` (blocking) until an event satisfies ``until`` or time runs out."""
        events: list[dict[str, Any]] = []
        # The client's watch helper has no type hints.
        stream = k8s_watch.Watch().stream(  # type: ignore[no-untyped-call]
            self.api.list_namespaced_custom_object,
            *self.resource,
            resource_version=resource_version,
            timeout_seconds=timeout,
        )
        for event in stream:
            events.append(event)
            if until(event):
                stream.close()
        return events


@pytest.fixture
async def thermostat(
    kube_api: KubeApi, kube_crds: list[str], kube_namespace: str, tmp_path: Path
) -> dict[str, Any]:
    """The example thermostat (Device + DeviceModel) applied with kubectl in the test's namespace."""
    await kubectl(kube_api, "apply", "-f", str(example_in(kube_namespace, tmp_path)))
    shown = await kubectl(kube_api, "get", "device", DEVICE, "-n", kube_namespace, "-o", "yaml")
    return _as_object(yaml.safe_load(shown))


# -- the handle and its kubeconfig ---------------------------------------------------------------------------


def test_kubeconfig_serves_the_python_client(kube_api: KubeApi) -> None:
    assert kube_api.backend in ("real", "emulator")
    assert (kube_api.ca_file is None) == (kube_api.backend == "emulator")
    assert kube_api.url.startswith("http://" if kube_api.ca_file is None else "https://")

    configuration = k8s.Configuration()
    # The client's config loader has no type hints.
    k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kube_api.kubeconfig), client_configuration=configuration
    )
    with k8s.ApiClient(configuration) as api_client:
        namespace = k8s.CoreV1Api(api_client).read_namespace("default")
    assert namespace.status is not None
    assert namespace.status.phase == "Active"


def test_a_wrong_token_is_refused(kube_api: KubeApi) -> None:
    configuration = k8s.Configuration(host=kube_api.url, api_key={"authorization": "Bearer not-the-token"})
    if kube_api.ca_file is not None:
        configuration.ssl_ca_cert = str(kube_api.ca_file)
    with k8s.ApiClient(configuration) as api_client, pytest.raises(k8s.ApiException) as refused:
        k8s.CoreV1Api(api_client).list_namespace()
    assert refused.value.status == 401


@pytest.mark.skipif(not real_backend_available(), reason="no kube-apiserver and etcd here")
def test_auto_finds_the_apiserver_from_the_repository_not_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBE_APISERVER", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_backend("auto") == "real"

    monkeypatch.setenv("KUBE_APISERVER", str(tmp_path / "no-such-binary"))
    assert resolve_backend("auto") == "emulator"
    with pytest.raises(BackendUnavailableError) as unavailable:
        resolve_backend("real")
    assert unavailable.value.backend == "real"


@pytest.mark.skipif(find_etcd() is None, reason="etcd is not installed")
async def test_an_apiserver_that_fails_is_reported_with_its_log_and_etcd_is_stopped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broken = tmp_path / "kube-apiserver"
    broken.write_text("#!/bin/sh\necho 'Error: unknown flag: --etcd-servers' >&2\nexit 3\n")
    broken.chmod(0o755)
    monkeypatch.setenv("KUBE_APISERVER", str(broken))

    with pytest.raises(KubeApiStartError) as failed:
        async with start_kube_api("real", tmp_path / "work"):
            pytest.fail("the API must not be yielded")
    assert failed.value.component == "kube-apiserver"
    assert "exited with status 3" in str(failed.value)
    assert "unknown flag: --etcd-servers" in failed.value.log_tail
    assert not [command for command in child_processes().values() if "etcd" in command]


# -- kubectl -------------------------------------------------------------------------------------------------


def _crd_names() -> list[str]:
    return [yaml.safe_load(crd.read_text())["metadata"]["name"] for crd in CRDS]


def _printer_column_names() -> list[str]:
    crd = yaml.safe_load(CRDS[0].read_text())
    columns = crd["spec"]["versions"][0].get("additionalPrinterColumns") or [{"name": "Age"}]
    return [column["name"].upper() for column in columns]


@needs_kubectl
async def test_kubectl_applies_the_crds_and_the_example(
    kube_api: KubeApi, kube_namespace: str, tmp_path: Path
) -> None:
    applied = await kubectl(kube_api, "apply", *(f"--filename={crd}" for crd in CRDS))
    assert all(f"customresourcedefinition.apiextensions.k8s.io/{name}" in applied for name in _crd_names())
    crds = [f"crd/{name}" for name in _crd_names()]
    await kubectl(kube_api, "wait", "--for=condition=Established", "--timeout=30s", *crds)

    async def served() -> bool:
        # A real apiserver adds an Established kind to discovery (which kubectl reads) a moment later.
        await kubectl(kube_api, "get", "devices,devicemodels")
        return True

    # Annotated: mypy infers wait_for's result from the context when the condition is async.
    in_discovery: bool = await wait_for(served, timeout=30, what="the new kinds in discovery")
    assert in_discovery

    applied = await kubectl(kube_api, "apply", "-f", str(example_in(kube_namespace, tmp_path)))
    assert f"device.devices.kubeedge.io/{DEVICE} created" in applied
    assert "devicemodel.devices.kubeedge.io/thermostat-model created" in applied

    header, *rows = (await kubectl(kube_api, "get", "devices", "-n", kube_namespace)).splitlines()
    assert header.split() == ["NAME", *_printer_column_names()]
    assert rows[0].split()[:3] == [DEVICE, "edge-node-1", "thermostat-model"]

    shown = await kubectl(kube_api, "get", "device", DEVICE, "-n", kube_namespace, "-o", "yaml")
    device = yaml.safe_load(shown)
    assert device["spec"]["nodeName"] == "edge-node-1"
    assert setpoint(device) == "21.5"
    assert device["metadata"]["namespace"] == kube_namespace
    assert device["metadata"]["generation"] == 1
    assert device["metadata"]["uid"]
    assert device["metadata"]["creationTimestamp"]
    assert int(device["metadata"]["resourceVersion"]) > 0


@needs_kubectl
async def test_kubectl_get_watch_sees_a_kubectl_edit(
    kube_api: KubeApi, kube_namespace: str, thermostat: dict[str, Any], tmp_path: Path
) -> None:
    columns = f"custom-columns=NAME:.metadata.name,SETPOINT:{SETPOINT},GENERATION:.metadata.generation"
    watch = ("get", "device", DEVICE, "-n", kube_namespace, "-w", "-o", columns)
    async with kubectl_lines(kube_api, *watch) as lines:
        await wait_for(lambda: any("21.5" in line for line in lines), timeout=30, what="the initial row")

        editor = sed_editor(tmp_path, "21.5", "23.5")
        edited = await kubectl(kube_api, "edit", "device", DEVICE, "-n", kube_namespace, env=editor)
        assert "edited" in edited

        await wait_for(lambda: any("23.5" in line for line in lines), timeout=30, what="the edited row")
    assert next(line.split() for line in lines if "23.5" in line) == [DEVICE, "23.5", "2"]


@needs_kubectl
async def test_python_watch_sees_an_edit_and_resumes_from_a_resource_version(
    kube_api: KubeApi,
    kube_client: k8s.ApiClient,
    kube_namespace: str,
    thermostat: dict[str, Any],
    tmp_path: Path,
) -> None:
    devices = Devices(kube_client, kube_namespace)
    before_edit = thermostat["metadata"]["resourceVersion"]

    def edited(event: dict[str, Any]) -> bool:
        return event["type"] == "MODIFIED" and setpoint(event["object"]) == "23.5"

    watching = asyncio.create_task(asyncio.to_thread(devices.watch, before_edit, edited))
    editor = sed_editor(tmp_path, "21.5", "23.5")
    await kubectl(kube_api, "edit", "device", DEVICE, "-n", kube_namespace, env=editor)
    live = await watching
    assert [event["type"] for event in live] == ["MODIFIED"]
    assert edited(live[0])

    # Resuming from the same resourceVersion after the fact replays the edit, and nothing before it.
    replayed = await asyncio.to_thread(devices.watch, before_edit, edited)
    assert [(e["type"], setpoint(e["object"])) for e in replayed] == [("MODIFIED", "23.5")]
    after_edit = replayed[0]["object"]["metadata"]["resourceVersion"]
    assert int(after_edit) > int(before_edit)

    # From the edit's own resourceVersion there is nothing new: the watch ends empty at its timeout.
    assert await asyncio.to_thread(devices.watch, after_edit, lambda event: True, 1) == []


# -- the Python client ---------------------------------------------------------------------------------------


def test_create_answers_201_with_the_stored_object(
    kube_client: k8s.ApiClient, kube_crds: list[str], kube_namespace: str
) -> None:
    api = k8s.CustomObjectsApi(kube_client)
    created, status, _ = api.create_namespaced_custom_object_with_http_info(
        GROUP, VERSION, kube_namespace, DEVICES, device_body("d1")
    )
    assert status == 201
    meta = _as_object(created)["metadata"]
    assert meta["namespace"] == kube_namespace
    assert meta["generation"] == 1
    assert meta["uid"]
    assert meta["creationTimestamp"]
    assert meta["resourceVersion"]

    with pytest.raises(k8s.ApiException) as duplicate:
        Devices(kube_client, kube_namespace).create(device_body("d1"))
    assert duplicate.value.status == 409


def test_status_patch_changes_only_the_status(
    kube_client: k8s.ApiClient, kube_crds: list[str], kube_namespace: str
) -> None:
    devices = Devices(kube_client, kube_namespace)
    devices.create(device_body("d1"))

    patched = devices.patch_status("d1", {"status": {"state": "online"}, "spec": {"nodeName": "elsewhere"}})
    assert patched["status"]["state"] == "online"
    assert patched["spec"]["nodeName"] == "edge-node-1"
    assert patched["metadata"]["generation"] == 1

    # And the other way round: a write to the object keeps the status as it is.
    patched = devices.patch("d1", {"status": {"state": "offline"}, "spec": {"nodeName": "edge-node-2"}})
    assert patched["status"]["state"] == "online"
    assert patched["spec"]["nodeName"] == "edge-node-2"
    assert patched["metadata"]["generation"] == 2


def test_put_with_a_stale_resource_version_conflicts(
    kube_client: k8s.ApiClient, kube_crds: list[str], kube_namespace: str
) -> None:
    devices = Devices(kube_client, kube_namespace)
    stale = devices.create(device_body("d1"))
    devices.patch("d1", {"spec": {"nodeName": "n2"}})

    stale["spec"]["nodeName"] = "n3"
    with pytest.raises(k8s.ApiException) as conflict:
        devices.replace("d1", stale)
    assert conflict.value.status == 409

    fresh = devices.get("d1")
    fresh["spec"]["nodeName"] = "n3"
    replaced = devices.replace("d1", fresh)
    assert replaced["spec"]["nodeName"] == "n3"
    assert int(replaced["metadata"]["resourceVersion"]) > int(fresh["metadata"]["resourceVersion"])


def test_label_selector_filters_lists(
    kube_client: k8s.ApiClient, kube_crds: list[str], kube_namespace: str
) -> None:
    devices = Devices(kube_client, kube_namespace)
    for name, labels in [("a", {"zone": "north"}), ("b", {"zone": "south"}), ("c", {})]:
        devices.create(device_body(name, labels))

    def names(selector: str) -> list[str]:
        listed = devices.select(selector)
        assert listed["kind"] == "DeviceList"
        return [item["metadata"]["name"] for item in listed["items"]]

    assert names("zone=north") == ["a"]
    assert names("zone!=north") == ["b", "c"]
    assert names("zone in (north,south)") == ["a", "b"]
    assert names("!zone") == ["c"]


def _pod(name: str, node: str) -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name),
        spec=k8s.V1PodSpec(node_name=node, containers=[k8s.V1Container(name="app", image="busybox")]),
    )


def test_field_selector_on_the_pod_node_name(kube_client: k8s.ApiClient, kube_namespace: str) -> None:
    core = k8s.CoreV1Api(kube_client)
    core.create_namespaced_pod(kube_namespace, _pod("p1", "edge-a"))
    core.create_namespaced_pod(kube_namespace, _pod("p2", "edge-b"))

    on_a = core.list_namespaced_pod(kube_namespace, field_selector="spec.nodeName=edge-a").items
    assert [pod.metadata.name for pod in on_a if pod.metadata] == ["p1"]
    on_b = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=edge-b").items
    mine = [pod.metadata.name for pod in on_b if pod.metadata and pod.metadata.namespace == kube_namespace]
    assert mine == ["p2"]


def test_a_pod_bound_to_a_node_stays_terminating_until_deleted_without_grace(
    kube_client: k8s.ApiClient, kube_namespace: str
) -> None:
    core = k8s.CoreV1Api(kube_client)
    core.create_namespaced_pod(kube_namespace, _pod("p1", "edge-a"))

    core.delete_namespaced_pod("p1", kube_namespace)
    terminating = core.read_namespaced_pod("p1", kube_namespace).metadata
    assert terminating is not None
    assert terminating.deletion_timestamp is not None
    assert terminating.deletion_grace_period_seconds == 30

    # What a kubelet (here: edgecore) does once the containers are gone.
    core.delete_namespaced_pod("p1", kube_namespace, grace_period_seconds=0)
    with pytest.raises(k8s.ApiException) as gone:
        core.read_namespaced_pod("p1", kube_namespace)
    assert gone.value.status == 404

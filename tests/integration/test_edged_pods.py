"""Edged running the node's pods in a real containerd + runc, fed by a real MetaManager.

The cloud is played by ``received(Message)`` calls on the MetaManager (what the EdgeController sends); the
link upwards is a recorder of the messages Edged reports (it is outside the thing under test).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import os
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from cloudsync import Message, Operation
from edgecore import MetaManager
from edgecore.edged import (
    POD_UID_LABEL,
    ContainerRuntime,
    ContainerState,
    Edged,
    SandboxState,
    pod_log_dir,
)
from edgetwin.testing import free_port, wait_for
from edgetwin.testing.containerd import BUSYBOX_IMAGE, Containerd, build_busybox_archive
from eventbus import BackoffPolicy
from tests.integration.test_edged_runtime import cgroup_value

NODE = "edge-1"
NODE_IP = "192.0.2.10"
FAST_BACKOFF = BackoffPolicy(minimum=0.3, maximum=1.0, factor=2.0, jitter=0.0)
TIMEOUT = 20.0


class Recorder:
    """The cloud link as Edged sees it: every message reported, in order."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.link_down = False
        self.refused = 0

    async def __call__(self, message: Message) -> None:
        if self.link_down:
            self.refused += 1
            raise ConnectionError("cloud link down")
        self.messages.append(message)

    def statuses(self, name: str) -> list[dict[str, Any]]:
        """The statuses reported for pod ``default/<name>``, oldest first."""
        return [
            message.content["Status"]
            for message in self.messages
            if message.resource == f"default/podstatus/{name}"
        ]

    def latest(self, name: str) -> dict[str, Any] | None:
        statuses = self.statuses(name)
        return statuses[-1] if statuses else None

    def phases(self, name: str) -> list[str]:
        """The phases reported for pod ``default/<name>``, oldest first."""
        return [str(status["phase"]) for status in self.statuses(name)]

    def deletes(self) -> list[Message]:
        return [message for message in self.messages if message.operation == Operation.DELETE]


def busybox(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": BUSYBOX_IMAGE, "command": ["sh", "-c", script], **extra}


def make_pod(name: str, *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": str(uuid.uuid4()), "resourceVersion": "1"},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 1,
            "containers": list(containers),
            **spec,
        },
    }


async def send(
    meta: MetaManager, kind: str, obj: dict[str, Any], operation: Operation = Operation.INSERT
) -> None:
    """Deliver an object as the EdgeController does."""
    metadata = obj["metadata"]
    await meta.received(
        Message.new(
            source="edgecontroller",
            group="resource",
            operation=operation,
            resource=f"{metadata.get('namespace', 'default')}/{kind}/{metadata['name']}",
            content=obj,
        )
    )


def configmap(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": data,
    }


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "data": encoded,
    }


def container_status(status: dict[str, Any] | None, name: str = "main") -> dict[str, Any]:
    assert status is not None
    found: list[dict[str, Any]] = [item for item in status["containerStatuses"] if item["name"] == name]
    assert len(found) == 1
    return found[0]


def restarts(registry: CollectorRegistry, cause: str) -> float:
    """Edged's container restarts counted for ``cause``."""
    value = registry.get_sample_value("edgetwin_edged_container_restarts_total", {"cause": cause})
    return value or 0.0


def condition(status: dict[str, Any], kind: str) -> str:
    [found] = [item for item in status["conditions"] if item["type"] == kind]
    return str(found["status"])


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest_asyncio.fixture
async def meta(tmp_path: Path) -> AsyncIterator[MetaManager]:
    async with MetaManager(tmp_path / "edge.db") as manager:
        yield manager


EdgedFactory = Callable[..., Awaitable[Edged]]


@pytest_asyncio.fixture
async def start_edged(
    meta: MetaManager,
    cri_runtime: ContainerRuntime,
    containerd: Containerd,
    recorder: Recorder,
    tmp_path: Path,
) -> AsyncIterator[EdgedFactory]:
    """Start Edged instances on the session's containerd; each is stopped after the test (its pods are
    removed by ``cri_runtime``)."""
    started: list[Edged] = []

    async def start(**options: Any) -> Edged:
        edged = Edged(
            meta,
            containerd.endpoint,
            NODE,
            root_dir=tmp_path / "edged",
            report=recorder,
            sync_period=options.pop("sync_period", 2.0),
            relist_period=0.2,
            backoff=FAST_BACKOFF,
            node_ip=NODE_IP,
            cgroup_parent=containerd.cgroup_parent,
            **options,
        )
        await edged.start()
        started.append(edged)
        return edged

    try:
        yield start
    finally:
        for edged in started:
            await edged.stop()


async def status_where(
    recorder: Recorder, name: str, accept: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """Wait for the pod's latest reported status to satisfy ``accept``; return it."""

    def check() -> dict[str, Any] | None:
        status = recorder.latest(name)
        return status if status is not None and accept(status) else None

    found: dict[str, Any] | None = await wait_for(check, timeout=TIMEOUT, what=what)
    assert found is not None
    return found


async def running(recorder: Recorder, name: str) -> dict[str, Any]:
    """Wait for the pod's reported status to be Running with every container ready."""
    return await status_where(
        recorder,
        name,
        lambda status: status["phase"] == "Running" and condition(status, "Ready") == "True",
        f"{name} running and ready",
    )


async def test_pod_runs_reports_running_and_logs_to_a_file(
    start_edged: EdgedFactory,
    meta: MetaManager,
    recorder: Recorder,
    cri_runtime: ContainerRuntime,
    tmp_path: Path,
) -> None:
    pod = make_pod(
        "web",
        busybox(
            "main",
            "touch /tmp/ready; echo hello from the edge; sleep 1000",
            readinessProbe={"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1},
        ),
    )
    edged = await start_edged()
    await send(meta, "pod", pod)

    status = await running(recorder, "web")
    main = container_status(status)
    assert main["state"]["running"]["startedAt"].endswith("Z")
    assert (main["ready"], main["started"], main["restartCount"], main["image"]) == (
        True,
        True,
        0,
        BUSYBOX_IMAGE,
    )
    assert main["containerID"].startswith("containerd://")
    assert (status["hostIP"], status["podIP"]) == (NODE_IP, NODE_IP)  # no CNI: the node's network
    assert {item["type"] for item in status["conditions"]} == {
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
    }
    assert status["startTime"].endswith("Z")
    first = recorder.messages[0]
    assert (first.route.source, first.route.group, first.operation) == ("edged", "resource", Operation.UPDATE)
    assert first.content["UID"] == pod["metadata"]["uid"]
    assert first.content["Name"] == "web"
    assert set(recorder.phases("web")) <= {"Pending", "Running"}

    log_file = pod_log_dir(tmp_path / "edged" / "pods", pod) / "main" / "0.log"
    await wait_for(lambda: "hello from the edge" in log_file.read_text(), what="the container's log file")

    reported = len(recorder.messages)
    edged.report_all()  # the link came back: the same status goes up again
    await wait_for(lambda: len(recorder.messages) > reported, what="status reported again")
    assert recorder.messages[-1].content["Status"] == status

    # The readiness probe fails: the pod stays Running but is no longer Ready; nothing restarts.
    container_id = main["containerID"].removeprefix("containerd://")
    assert (await cri_runtime.exec_sync(container_id, ["rm", "/tmp/ready"], timeout=5)).ok
    unready = await status_where(
        recorder, "web", lambda status: condition(status, "Ready") == "False", "the pod no longer ready"
    )
    assert unready["phase"] == "Running"
    assert condition(unready, "ContainersReady") == "False"
    assert (container_status(unready)["ready"], container_status(unready)["restartCount"]) == (False, 0)
    assert "running" in container_status(unready)["state"]


async def test_configmap_volume_changes_in_the_running_container_and_env_comes_from_secrets(
    start_edged: EdgedFactory, meta: MetaManager, recorder: Recorder, cri_runtime: ContainerRuntime
) -> None:
    await send(meta, "configmap", configmap("settings", {"mode": "eco", "level": "3"}))
    await send(meta, "secret", secret("creds", {"password": "s3cret", "user": "edge"}))
    container = busybox(
        "main",
        'echo "$0|$1" > /tmp/args; sleep 1000',
        args=["$(GREETING)", "$$(GREETING)"],
        env=[
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "level"}}},
            {"name": "GREETING", "value": "level-$(LEVEL)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        envFrom=[{"secretRef": {"name": "creds"}, "prefix": "DB_"}],
        volumeMounts=[
            {"name": "config", "mountPath": "/etc/app"},
            {"name": "secrets", "mountPath": "/etc/creds"},
            {"name": "scratch", "mountPath": "/scratch"},
        ],
    )
    pod = make_pod(
        "app",
        container,
        volumes=[
            {"name": "config", "configMap": {"name": "settings"}},
            {
                "name": "secrets",
                "secret": {"secretName": "creds", "items": [{"key": "password", "path": "db/pw"}]},
            },
            {"name": "scratch", "emptyDir": {}},
        ],
    )
    await start_edged()
    await send(meta, "pod", pod)
    container_id = container_status(await running(recorder, "app"))["containerID"].removeprefix(
        "containerd://"
    )

    async def run(script: str) -> str:
        result = await cri_runtime.exec_sync(container_id, ["sh", "-c", script], timeout=5)
        assert result.exit_code == 0, result.stderr
        return result.stdout.decode()

    assert await run("echo $PASSWORD $LEVEL $GREETING $POD $DB_user $DB_password") == (
        "s3cret 3 level-3 app edge s3cret\n"
    )
    assert await run("cat /tmp/args") == "level-3|$(GREETING)\n"  # args expanded, $$ escaped
    assert await run("cat /etc/app/mode; echo; cat /etc/creds/db/pw") == "eco\ns3cret"
    assert await run("stat -L -c %a /etc/creds/db/pw") == "600\n"
    assert await run("ls /etc/creds") == "db\n"  # only the items asked for
    assert await run("echo x > /scratch/file && cat /scratch/file") == "x\n"
    readonly = await cri_runtime.exec_sync(container_id, ["sh", "-c", "echo x > /etc/app/new"], timeout=5)
    assert readonly.exit_code != 0

    await send(meta, "configmap", configmap("settings", {"mode": "turbo"}), Operation.UPDATE)

    async def mode() -> bool:
        return await run("cat /etc/app/mode; ls /etc/app | tr '\\n' ' '") == "turbomode "

    await wait_for(mode, timeout=TIMEOUT, what="the new ConfigMap content inside the container")
    assert container_status(recorder.latest("app"))["restartCount"] == 0  # updated in place


async def test_missing_configmap_waits_with_a_reason_until_it_arrives(
    start_edged: EdgedFactory, meta: MetaManager, recorder: Recorder
) -> None:
    container = busybox(
        "main",
        "sleep 1000",
        env=[{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "late", "key": "x"}}}],
    )
    await start_edged()
    await send(meta, "pod", make_pod("late", container))

    def config_error() -> bool:
        status = recorder.latest("late")
        return (
            status is not None
            and container_status(status)["state"].get("waiting", {}).get("reason")
            == "CreateContainerConfigError"
        )

    await wait_for(config_error, timeout=TIMEOUT, what="CreateContainerConfigError")
    waiting = container_status(recorder.latest("late"))["state"]["waiting"]
    assert "configmap 'late' not found" in waiting["message"]
    assert recorder.phases("late")[-1] == "Pending"

    await send(meta, "configmap", configmap("late", {"x": "1"}))
    await running(recorder, "late")


async def test_crash_loop_restarts_with_backoff_and_never_fails_the_pod(
    start_edged: EdgedFactory, meta: MetaManager, recorder: Recorder, cri_runtime: ContainerRuntime
) -> None:
    registry = CollectorRegistry()
    await start_edged(registry=registry)
    crashing = make_pod("crash", busybox("main", "echo crashing; exit 2"))
    failing = make_pod("once", busybox("main", "exit 3"), restartPolicy="Never")
    done = make_pod("job", busybox("main", "echo done"), restartPolicy="OnFailure")
    for pod in (crashing, failing, done):
        await send(meta, "pod", pod)

    await status_where(
        recorder, "crash", lambda status: bool(container_status(status)["restartCount"] >= 2), "two restarts"
    )
    statuses = [container_status(status) for status in recorder.statuses("crash")]
    assert any(item["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff" for item in statuses)
    backing_off = next(
        item for item in statuses if item["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"
    )
    assert backing_off["lastState"]["terminated"]["exitCode"] == 2
    assert {status["phase"] for status in recorder.statuses("crash")} <= {"Pending", "Running"}
    assert restarts(registry, "exited") >= 2
    # kubelet keeps the running (or last) container and the one before it, no more.
    assert len(await cri_runtime.list_containers(labels={POD_UID_LABEL: crashing["metadata"]["uid"]})) <= 2

    failed = await status_where(recorder, "once", lambda status: status["phase"] == "Failed", "Failed")
    terminated = container_status(failed)["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"], container_status(failed)["restartCount"]) == (
        3,
        "Error",
        0,
    )
    assert condition(failed, "Ready") == "False"

    succeeded = await status_where(
        recorder, "job", lambda status: status["phase"] == "Succeeded", "Succeeded"
    )
    assert container_status(succeeded)["state"]["terminated"]["exitCode"] == 0


async def test_failed_liveness_probe_restarts_the_container(
    start_edged: EdgedFactory, meta: MetaManager, recorder: Recorder
) -> None:
    probe = {"exec": {"command": ["test", "-f", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 1}
    container = busybox(
        "main",
        "touch /tmp/healthy; sleep 1; rm /tmp/healthy; sleep 1000",
        livenessProbe=probe,
    )
    registry = CollectorRegistry()
    await start_edged(registry=registry)
    await send(meta, "pod", make_pod("probed", container))
    await running(recorder, "probed")

    restarted = await status_where(
        recorder,
        "probed",
        lambda status: bool(container_status(status)["restartCount"] >= 1),
        "restart after the liveness probe failed",
    )
    main = container_status(restarted)
    assert main["lastState"]["terminated"]["exitCode"] in {137, 143}  # killed, not exited on its own
    assert restarts(registry, "liveness") >= 1


async def test_http_readiness_probe_follows_the_server_and_tcp_liveness_restarts(
    start_edged: EdgedFactory, meta: MetaManager, recorder: Recorder
) -> None:
    http_port, tcp_port = free_port(), free_port()
    # Host network: the pod's server listens on the node. /www/ok exists until the script removes it.
    server = busybox(
        "web",
        f"mkdir -p /www && echo ok > /www/ok && httpd -f -p 127.0.0.1:{http_port} -h /www & "
        "sleep 4; rm /www/ok; sleep 1000",
        ports=[{"name": "http", "containerPort": http_port}],
        readinessProbe={
            "httpGet": {"host": "127.0.0.1", "port": "http", "path": "/ok"},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    )
    # Listens for 4 s, then the port closes: the liveness probe fails and the container is restarted.
    listener = busybox(
        "listener",
        f"timeout 4 httpd -f -p 127.0.0.1:{tcp_port}; sleep 1000",
        livenessProbe={
            "tcpSocket": {"host": "127.0.0.1", "port": tcp_port},
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
    )
    registry = CollectorRegistry()
    await start_edged(registry=registry)
    await send(meta, "pod", make_pod("served", server, listener))

    await running(recorder, "served")
    not_ready = await status_where(
        recorder,
        "served",
        lambda status: not container_status(status, "web")["ready"],
        "web not ready once /ok answers 404",
    )
    assert condition(not_ready, "Ready") == "False"
    assert container_status(not_ready, "web")["restartCount"] == 0  # readiness never restarts
    restarted = await status_where(
        recorder,
        "served",
        lambda status: bool(container_status(status, "listener")["restartCount"] >= 1),
        "listener restarted after its port closed",
    )
    assert container_status(restarted, "listener")["lastState"]["terminated"]["exitCode"] in {137, 143}
    assert restarts(registry, "liveness") >= 1


async def test_a_startup_probe_holds_readiness_back_and_restarts_a_container_that_never_starts(
    start_edged: EdgedFactory, meta: MetaManager, recorder: Recorder
) -> None:
    every_second = {"periodSeconds": 1, "failureThreshold": 1}
    # Starts after 4 s; its readiness probe would pass at once, but waits for the startup probe.
    slow = busybox(
        "main",
        "sleep 4; touch /tmp/started; sleep 1000",
        startupProbe={
            "exec": {"command": ["test", "-f", "/tmp/started"]},
            "periodSeconds": 1,
            "failureThreshold": 30,
        },
        readinessProbe={"exec": {"command": ["true"]}, **every_second},
        # Would restart the container at its first run: it must not run before startup passed.
        livenessProbe={"exec": {"command": ["test", "-f", "/tmp/started"]}, **every_second},
    )
    registry = CollectorRegistry()
    await start_edged(registry=registry)
    await send(meta, "pod", make_pod("slow", slow))

    ready = container_status(await running(recorder, "slow"))
    assert (ready["started"], ready["restartCount"]) == (True, 0)
    # Every status reported while the container ran before startup passed: neither started nor ready.
    first_running = next(
        container_status(status)
        for status in recorder.statuses("slow")
        if "running" in container_status(status)["state"]
    )
    assert (first_running["started"], first_running["ready"]) == (False, False)

    never = busybox(
        "main",
        "sleep 1000",
        startupProbe={"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 2},
    )
    await send(meta, "pod", make_pod("never", never))
    restarted = await status_where(
        recorder,
        "never",
        lambda status: bool(container_status(status)["restartCount"] >= 1),
        "a restart after the startup probe failed",
    )
    assert container_status(restarted)["lastState"]["terminated"]["exitCode"] in {137, 143}
    assert restarts(registry, "startup") >= 1
    assert restarts(registry, "liveness") == 0


async def test_a_probe_on_an_undeclared_named_port_keeps_the_container_from_starting(
    start_edged: EdgedFactory, meta: MetaManager, recorder: Recorder
) -> None:
    container = busybox("main", "sleep 1000", readinessProbe={"tcpSocket": {"port": "metrics"}})
    await start_edged()
    await send(meta, "pod", make_pod("misprobed", container))

    waiting = await status_where(
        recorder,
        "misprobed",
        lambda status: "waiting" in container_status(status)["state"],
        "the container waiting with a reason",
    )
    state = container_status(waiting)["state"]["waiting"]
    assert state["reason"] == "CreateContainerConfigError"
    assert "main.readinessProbe.tcpSocket.port" in state["message"]
    assert "no container port has that name" in state["message"]


async def test_a_new_image_in_the_pod_spec_replaces_the_running_container(
    start_edged: EdgedFactory,
    meta: MetaManager,
    recorder: Recorder,
    cri_runtime: ContainerRuntime,
    tmp_path: Path,
) -> None:
    upgraded_image = "edgetwin.local/busybox:upgraded"
    archive = build_busybox_archive(tmp_path / "upgraded.tar", image=upgraded_image)
    await cri_runtime.import_image(archive)
    registry = CollectorRegistry()
    await start_edged(registry=registry)
    pod = make_pod("upgraded", busybox("main", "echo running $0; sleep 1000"))
    await send(meta, "pod", pod)
    first = container_status(await running(recorder, "upgraded"))

    changed = copy.deepcopy(pod)
    changed["metadata"]["resourceVersion"] = "2"
    changed["spec"]["containers"][0]["image"] = upgraded_image
    await send(meta, "pod", changed, Operation.UPDATE)

    replaced = await status_where(
        recorder,
        "upgraded",
        lambda status: (
            container_status(status)["image"] == upgraded_image
            and "running" in container_status(status)["state"]
        ),
        "the container running the new image",
    )
    main = container_status(replaced)
    assert main["containerID"] != first["containerID"]
    assert main["restartCount"] == 1
    assert restarts(registry, "image") == 1


def init_status(status: dict[str, Any] | None, name: str) -> dict[str, Any]:
    assert status is not None
    found: list[dict[str, Any]] = [
        item for item in status.get("initContainerStatuses", []) if item["name"] == name
    ]
    assert len(found) == 1
    return found[0]


WORK = {"volumeMounts": [{"name": "work", "mountPath": "/work"}]}


async def test_init_containers_run_in_order_to_completion_before_the_app(
    start_edged: EdgedFactory, meta: MetaManager, recorder: Recorder, tmp_path: Path
) -> None:
    pod = make_pod(
        "initialised",
        busybox("main", "cat /work/order; sleep 1000", **WORK),
        initContainers=[
            busybox("first", "sleep 2; echo first >> /work/order", **WORK),
            busybox("second", "grep -q first /work/order && echo second >> /work/order", **WORK),
        ],
        volumes=[{"name": "work", "emptyDir": {}}],
    )
    await start_edged()
    await send(meta, "pod", pod)

    status = await running(recorder, "initialised")
    # What was reported while the first init container ran: pending, not initialised, nothing else started.
    initialising = next(
        status
        for status in recorder.statuses("initialised")
        if "running" in init_status(status, "first")["state"]
    )
    assert initialising["phase"] == "Pending"
    assert condition(initialising, "Initialized") == "False"
    assert container_status(initialising)["state"]["waiting"]["reason"] == "PodInitializing"
    assert "running" not in init_status(initialising, "second")["state"]
    assert condition(status, "Initialized") == "True"
    for name in ("first", "second"):
        done = init_status(status, name)
        assert (done["ready"], done["state"]["terminated"]["exitCode"], done["restartCount"]) == (True, 0, 0)
    log_file = pod_log_dir(tmp_path / "edged" / "pods", pod) / "main" / "0.log"

    def logged() -> list[str]:  # CRI log lines: "<time> stdout F <text>"
        return [line.split(" ", 3)[-1] for line in log_file.read_text().splitlines()]

    await wait_for(lambda: logged() == ["first", "second"], what="the app seeing both init steps")


async def test_a_sidecar_init_container_runs_beside_the_app_is_restarted_and_does_not_hold_the_pod(
    start_edged: EdgedFactory, meta: MetaManager, recorder: Recorder, cri_runtime: ContainerRuntime
) -> None:
    sidecar = busybox(
        "proxy",
        "touch /work/proxy-up; while [ ! -f /work/stop ]; do sleep 0.2; done; rm /work/stop; exit 1",
        restartPolicy="Always",
        **WORK,
    )
    after = busybox("check", "test -f /work/proxy-up", **WORK)  # runs only once the sidecar runs
    main = busybox("main", "while [ ! -f /work/done ]; do sleep 0.2; done", **WORK)
    await start_edged()
    pod = make_pod(
        "sidecar",
        main,
        initContainers=[sidecar, after],
        volumes=[{"name": "work", "emptyDir": {}}],
        restartPolicy="Never",
    )
    await send(meta, "pod", pod)

    status = await running(recorder, "sidecar")
    assert condition(status, "Initialized") == "True"
    proxy = init_status(status, "proxy")
    assert ("running" in proxy["state"], proxy["ready"], proxy["started"]) == (True, True, True)
    assert init_status(status, "check")["state"]["terminated"]["exitCode"] == 0
    main_id = container_status(status)["containerID"].removeprefix("containerd://")

    # The sidecar exits: restarted although the pod's restartPolicy is Never.
    assert (await cri_runtime.exec_sync(main_id, ["touch", "/work/stop"], timeout=5)).ok
    restarted = await status_where(
        recorder,
        "sidecar",
        lambda status: (
            init_status(status, "proxy")["restartCount"] >= 1
            and "running" in init_status(status, "proxy")["state"]
        ),
        "the sidecar running again",
    )
    assert restarted["phase"] == "Running"
    assert container_status(restarted)["restartCount"] == 0

    # The app finishes: the pod succeeds, the running sidecar does not hold it.
    assert (await cri_runtime.exec_sync(main_id, ["touch", "/work/done"], timeout=5)).ok
    await status_where(recorder, "sidecar", lambda status: status["phase"] == "Succeeded", "Succeeded")


async def test_a_failed_init_container_is_retried_and_under_never_fails_the_pod(
    start_edged: EdgedFactory, meta: MetaManager, recorder: Recorder
) -> None:
    # Fails on its first run only (its marker survives in the emptyDir): retried, then the app starts.
    flaky = busybox("setup", "[ -f /work/tried ] && exit 0; touch /work/tried; exit 3", **WORK)
    await start_edged()
    await send(
        meta,
        "pod",
        make_pod(
            "retried",
            busybox("main", "sleep 1000"),
            initContainers=[flaky],
            volumes=[{"name": "work", "emptyDir": {}}],
        ),
    )
    status = await running(recorder, "retried")
    setup = init_status(status, "setup")
    assert (setup["restartCount"], setup["lastState"]["terminated"]["exitCode"]) == (1, 3)

    await send(
        meta,
        "pod",
        make_pod(
            "doomed",
            busybox("main", "sleep 1000"),
            initContainers=[busybox("setup", "exit 4")],
            restartPolicy="Never",
        ),
    )
    failed = await status_where(
        recorder, "doomed", lambda status: status["phase"] == "Failed", "the pod failed"
    )
    assert init_status(failed, "setup")["state"]["terminated"]["exitCode"] == 4
    assert condition(failed, "Initialized") == "False"
    assert container_status(failed)["state"]["waiting"]["reason"] == "PodInitializing"
    assert "Pending" in recorder.phases("doomed")
    assert "Running" not in recorder.phases("doomed")


async def test_graceful_deletion_stops_the_pod_and_reports_the_delete(
    start_edged: EdgedFactory,
    meta: MetaManager,
    recorder: Recorder,
    cri_runtime: ContainerRuntime,
    tmp_path: Path,
) -> None:
    await start_edged()
    pod = make_pod("leaving", busybox("main", "trap 'exit 0' TERM; sleep 1000 & wait"))
    other = make_pod("forced", busybox("main", "sleep 1000"))
    await send(meta, "pod", pod)
    await send(meta, "pod", other)
    await running(recorder, "leaving")
    await running(recorder, "forced")
    uid = pod["metadata"]["uid"]

    terminating = {
        **pod,
        "metadata": {
            **pod["metadata"],
            "deletionTimestamp": "2030-01-01T00:00:00Z",
            "deletionGracePeriodSeconds": 5,
        },
    }
    await send(meta, "pod", terminating, Operation.UPDATE)

    [deleted] = await wait_for(recorder.deletes, timeout=TIMEOUT, what="the delete report")
    assert (deleted.resource, deleted.content) == ("default/pod/leaving", {"metadata": {"uid": uid}})
    assert await cri_runtime.list_pod_sandboxes({POD_UID_LABEL: uid}) == []
    assert await cri_runtime.list_containers(labels={POD_UID_LABEL: uid}) == []
    assert not (pod_log_dir(tmp_path / "edged" / "pods", pod)).exists()

    # The cloud finishes the deletion; a pod deleted in the cloud at once goes too, without a report.
    await send(meta, "pod", terminating, Operation.DELETE)
    await send(meta, "pod", other, Operation.DELETE)
    other_uid = other["metadata"]["uid"]

    async def other_gone() -> bool:
        return await cri_runtime.list_pod_sandboxes({POD_UID_LABEL: other_uid}) == []

    await wait_for(other_gone, timeout=TIMEOUT, what="the force-deleted pod's sandbox removed")
    assert len(recorder.deletes()) == 1


async def test_restarted_edged_adopts_running_containers_and_removes_orphans(
    start_edged: EdgedFactory, meta: MetaManager, recorder: Recorder, cri_runtime: ContainerRuntime
) -> None:
    first = await start_edged()
    kept = make_pod("kept", busybox("main", "sleep 1000"))
    orphan = make_pod("orphan", busybox("main", "sleep 1000"))
    finished = make_pod("finished", busybox("main", "exit 0"), restartPolicy="Never")
    for pod in (kept, orphan, finished):
        await send(meta, "pod", pod)
    container_id = container_status(await running(recorder, "kept"))["containerID"]
    await running(recorder, "orphan")
    succeeded = await status_where(
        recorder, "finished", lambda status: status["phase"] == "Succeeded", "done"
    )
    finished_id = container_status(succeeded)["containerID"]

    async def finished_sandbox_stopped() -> bool:
        [sandbox] = await cri_runtime.list_pod_sandboxes({POD_UID_LABEL: finished["metadata"]["uid"]})
        return sandbox.state == SandboxState.NOT_READY

    await wait_for(finished_sandbox_stopped, what="the finished pod's sandbox stopped")
    await first.stop()  # edgecore goes away; the containers keep running
    # Meanwhile the cloud deleted a pod (the store is how the new Edged learns of it).
    await send(meta, "pod", orphan, Operation.DELETE)
    recorder.messages.clear()

    await start_edged()

    status = await running(recorder, "kept")
    assert container_status(status)["containerID"] == container_id
    assert container_status(status)["restartCount"] == 0
    [info] = await cri_runtime.list_containers(labels={POD_UID_LABEL: kept["metadata"]["uid"]})
    assert (f"containerd://{info.id}", info.state) == (container_id, ContainerState.RUNNING)
    assert await cri_runtime.list_pod_sandboxes({POD_UID_LABEL: orphan["metadata"]["uid"]}) == []
    # A finished pod is not run again.
    done = await status_where(recorder, "finished", lambda status: True, "the finished pod's status")
    assert (done["phase"], container_status(done)["containerID"]) == ("Succeeded", finished_id)
    [job] = await cri_runtime.list_containers(labels={POD_UID_LABEL: finished["metadata"]["uid"]})
    assert f"containerd://{job.id}" == finished_id


async def test_memory_limit_reaches_the_container_cgroup(
    start_edged: EdgedFactory, meta: MetaManager, recorder: Recorder, cri_runtime: ContainerRuntime
) -> None:
    await start_edged()
    container = busybox("main", "sleep 1000", resources={"limits": {"memory": "40Mi"}})
    await send(meta, "pod", make_pod("limited", container))
    container_id = container_status(await running(recorder, "limited"))["containerID"].removeprefix(
        "containerd://"
    )
    pid = await cri_runtime.container_pid(container_id)
    assert pid is not None
    limit = await asyncio.to_thread(cgroup_value, pid, "memory", "memory.limit_in_bytes", "memory.max")
    assert limit == str(40 * 2**20)


async def test_unpullable_image_reports_err_image_pull_then_backoff(
    start_edged: EdgedFactory, meta: MetaManager, recorder: Recorder
) -> None:
    await start_edged()
    # A registry on a closed loopback port: the pull fails at once, without leaving the machine.
    container = {"name": "main", "image": "127.0.0.1:1/missing:1"}
    await send(meta, "pod", make_pod("nopull", container))

    def reasons() -> set[str]:
        return {
            container_status(status)["state"].get("waiting", {}).get("reason", "")
            for status in recorder.statuses("nopull")
        }

    await wait_for(
        lambda: {"ErrImagePull", "ImagePullBackOff"} <= reasons(), timeout=TIMEOUT, what="pull reasons"
    )
    assert set(recorder.phases("nopull")) == {"Pending"}


async def test_without_the_cloud_a_killed_container_restarts_and_the_status_catches_up(
    start_edged: EdgedFactory, meta: MetaManager, recorder: Recorder, cri_runtime: ContainerRuntime
) -> None:
    registry = CollectorRegistry()
    await start_edged(registry=registry)
    await send(meta, "pod", make_pod("steady", busybox("main", "sleep 1000")))
    first_id = container_status(await running(recorder, "steady"))["containerID"]
    recorder.link_down = True

    pid = await cri_runtime.container_pid(first_id.removeprefix("containerd://"))
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the container dies while the cloud is away

    async def replaced() -> bool:
        infos = await cri_runtime.list_containers(labels={POD_UID_LABEL: stored_uid(meta, "steady")})
        return any(info.state == ContainerState.RUNNING and info.restart_count == 1 for info in infos)

    await wait_for(replaced, timeout=TIMEOUT, what="the killed container restarted")
    await wait_for(lambda: recorder.refused > 0, what="a report refused by the link")
    recorder.link_down = False

    caught_up = await status_where(
        recorder,
        "steady",
        lambda status: bool(
            container_status(status)["restartCount"] == 1 and condition(status, "Ready") == "True"
        ),
        "the status after the link came back",
    )
    main = container_status(caught_up)
    assert main["containerID"] != first_id
    assert main["lastState"]["terminated"]["exitCode"] == 137
    failed = registry.get_sample_value("edgetwin_edged_reports_total", {"kind": "status", "result": "failed"})
    assert failed is not None
    assert failed >= 1


def stored_uid(meta: MetaManager, name: str) -> str:
    """The uid of the pod ``default/<name>`` as the edge stores it."""
    pod = meta.get("pod", "default", name)
    assert pod is not None
    return str(pod["metadata"]["uid"])

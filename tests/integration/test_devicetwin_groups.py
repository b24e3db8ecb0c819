"""A burst of one device's ``twin/update`` requests, against a real mosquitto and SQLite file: the requests
share commits, and keep their order, their own answers and the durability rule."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from devicetwin import DeviceTwin, TwinDevice, TwinProperty, TwinStore
from eventbus import BrokerSettings, MosquittoBroker, MqttClient, MqttMessage


@dataclass
class Bench:
    """A running twin with one device (``pump``, an int property ``speed``) and an app client."""

    twin: DeviceTwin
    app: MqttClient
    registry: CollectorRegistry
    db_path: Path
    prefix: str  # $hw/events/device/<namespace>/pump

    def commits(self) -> float:
        return self.registry.get_sample_value("edgetwin_twin_store_batch_size_count") or 0.0

    def burst(self, requests: list[tuple[str, dict[str, Any]]]) -> None:
        """Publish (suffix, body) requests back to back, without waiting for any acknowledgement."""
        for suffix, body in requests:
            self.app.publish_nowait(f"{self.prefix}/{suffix}", json.dumps(body))

    async def answers(self, count: int) -> list[MqttMessage]:
        received: list[MqttMessage] = []

        async def collect() -> None:
            async for message in self.app.messages():
                received.append(message)
                if len(received) == count:
                    return

        await asyncio.wait_for(collect(), 20)
        return received


def update(event_id: str, value: str) -> tuple[str, dict[str, Any]]:
    return "twin/update", {"event_id": event_id, "twin": {"speed": {"actual": {"value": value}}}}


@pytest.fixture
async def bench(mosquitto: MosquittoBroker, tmp_path: Path) -> AsyncIterator[Bench]:
    namespace = f"g{uuid.uuid4().hex[:10]}"
    registry = CollectorRegistry()
    db_path = tmp_path / "edgecore.db"
    settings = BrokerSettings(url=mosquitto.url)
    async with (
        await TwinStore.open(db_path, registry=registry) as store,
        MqttClient(settings) as client,
        MqttClient(settings, registry=None) as app,
    ):
        twin = DeviceTwin(store, client, f"node-{namespace}", registry=registry)
        await twin.start()
        try:
            await twin.upsert_device(
                TwinDevice(namespace, "pump", properties=[TwinProperty("speed", type="int", optional=True)])
            )
            prefix = f"$hw/events/device/{namespace}/pump"
            for suffix in ("twin/update/result", "twin/update/document", "twin/get/result"):
                await app.subscribe(f"{prefix}/{suffix}")
            yield Bench(twin, app, registry, db_path, prefix)
        finally:
            await twin.stop()


async def test_a_stream_of_updates_shares_commits_and_keeps_its_order(bench: Bench) -> None:
    before = bench.commits()
    bench.burst([update(str(i), str(i)) for i in range(300)])

    answers = await bench.answers(600)  # a result and a document each

    results = [json.loads(m.payload) for m in answers if m.topic.endswith("/result")]
    documents = [json.loads(m.payload) for m in answers if m.topic.endswith("/document")]
    assert [r["event_id"] for r in results] == [str(i) for i in range(300)]
    assert all("code" not in r for r in results)
    assert [d["twin"]["speed"]["current"]["actual"]["value"] for d in documents] == [
        str(i) for i in range(300)
    ]
    # Each one's result comes before its document: the pairs interleave in request order.
    assert [m.topic.rsplit("/", 1)[1] for m in answers[:4]] == ["result", "document"] * 2
    assert bench.commits() - before < 150, "a steady stream of one device must not commit update by update"
    speed = (await bench.twin.get_twin(bench.twin.list_devices()[0].id))["speed"]
    assert speed.actual_value == "299"
    assert speed.actual_version is not None
    assert speed.actual_version.edge == 300


async def test_another_request_keeps_its_place_between_updates(bench: Bench) -> None:
    bench.burst(
        [update(str(i), str(i)) for i in range(50)]
        + [("twin/get", {"event_id": "get"})]
        + [update(str(i), str(i)) for i in range(50, 100)]
    )

    answers = await bench.answers(201)

    [got] = [json.loads(m.payload) for m in answers if m.topic.endswith("/get/result")]
    assert got["twin"]["speed"]["actual"]["value"] == "49"
    order = [json.loads(m.payload)["event_id"] for m in answers if not m.topic.endswith("/document")]
    assert order == [str(i) for i in range(50)] + ["get"] + [str(i) for i in range(50, 100)]


async def test_a_bad_update_in_a_burst_is_refused_alone(bench: Bench) -> None:
    requests = [update(str(i), str(i)) for i in range(50)]
    requests[20] = update("20", "fast")  # not an int
    bench.burst(requests)

    answers = await bench.answers(99)

    results = {
        json.loads(m.payload)["event_id"]: json.loads(m.payload) for m in answers if "/result" in m.topic
    }
    assert (results["20"]["code"], results["20"]["property"]) == (400, "speed")
    assert [event_id for event_id, r in results.items() if "code" in r] == ["20"]
    speed = (await bench.twin.get_twin(bench.twin.list_devices()[0].id))["speed"]
    assert speed.actual_value == "49"


async def test_a_store_failure_answers_500_and_the_twin_stays_with_the_store(bench: Bench) -> None:
    # A trigger stands in for a disk that refuses one row: the store sees a real SQLite error. Update 13 alone
    # writes that row (a property of its own), so its group fails whatever else the group holds.
    with sqlite3.connect(bench.db_path) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON device_twin WHEN NEW.name = 'doomed' "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
    requests = [update(str(i), str(i)) for i in range(30)]
    requests[13][1]["twin"]["doomed"] = {"actual": {"value": "x"}}
    bench.burst(requests)

    results: dict[int, dict[str, Any]] = {}
    while len(results) < 30:
        for message in await bench.answers(1):
            if message.topic.endswith("/result"):
                body = json.loads(message.payload)
                results[int(body["event_id"])] = body

    assert results[13]["code"] == 500
    assert {r.get("code") for r in results.values()} <= {None, 500}
    last_kept = max(i for i, r in results.items() if "code" not in r)
    speed = (await bench.twin.get_twin(bench.twin.list_devices()[0].id))["speed"]
    assert speed.actual_value == str(last_kept)
    with sqlite3.connect(bench.db_path) as conn:
        assert conn.execute("SELECT actual FROM device_twin WHERE name = 'speed'").fetchall() == [
            (str(last_kept),)
        ]

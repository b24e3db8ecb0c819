"""The MQTT side of the edge: KubeEdge's topic contract, an async client and a managed mosquitto.

``topics`` builds and parses every ``$hw/events`` topic; :class:`MqttClient` stays connected to a broker
(reconnect, re-subscribe, ordered QoS 1 publishing with a bounded window); :class:`MosquittoBroker` runs one.
"""

from eventbus import topics
from eventbus.backoff import Backoff, BackoffPolicy
from eventbus.broker import BrokerTls, MosquittoBroker, find_program
from eventbus.client import MqttClient, MqttMessage
from eventbus.errors import (
    BrokerError,
    BrokerNotInstalledError,
    BrokerPortInUseError,
    BrokerStartError,
    EventBusClosedError,
    EventBusConfigError,
    EventBusConnectionError,
    EventBusError,
    EventBusPublishError,
    EventBusSubscribeError,
    TopicError,
)
from eventbus.settings import BrokerAddress, BrokerSettings, parse_broker_url
from eventbus.topics import Topic, TopicKind, parse_topic

__all__ = [
    "Backoff",
    "BackoffPolicy",
    "BrokerAddress",
    "BrokerError",
    "BrokerNotInstalledError",
    "BrokerPortInUseError",
    "BrokerSettings",
    "BrokerStartError",
    "BrokerTls",
    "EventBusClosedError",
    "EventBusConfigError",
    "EventBusConnectionError",
    "EventBusError",
    "EventBusPublishError",
    "EventBusSubscribeError",
    "MosquittoBroker",
    "MqttClient",
    "MqttMessage",
    "Topic",
    "TopicError",
    "TopicKind",
    "find_program",
    "parse_broker_url",
    "parse_topic",
    "topics",
]

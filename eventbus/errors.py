"""The eventbus exception hierarchy: every error raised by this package derives from :class:`EventBusError`.

Leaves carry the data a caller needs to react (the URL and reason of a failed connection, the topic of a
failed publish, the field of a bad setting); third-party exceptions (paho, ssl, OSError) are translated where
they enter.
"""

from __future__ import annotations

from device_models import EdgetwinError, ServeError


class EventBusError(EdgetwinError):
    """Base class of every error raised by the eventbus package."""


class EventBusConfigError(EventBusError, ValueError):
    """A setting is invalid; nothing is retried: fix ``field`` (the value shown is redacted for secrets)."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {field}={value!r}: {reason}")


class TopicError(EventBusError, ValueError):
    """A topic or one of its segments (device namespace/name, node name) cannot be used in a topic."""

    def __init__(self, field: str, value: str, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {field} {value!r} for an MQTT topic: {reason}")


class EventBusConnectionError(EventBusError):
    """The broker at ``url`` could not be reached or refused the connection (``reason`` says why)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"MQTT broker {url}: {reason}")


class EventBusClosedError(EventBusError):
    """The client was stopped; ``operation`` cannot be carried out any more."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        super().__init__(f"MQTT client is stopped: cannot {operation}")


class EventBusPublishError(EventBusError):
    """A message for ``topic`` was not accepted (bad topic, broker refusal, client stopped before PUBACK)."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"publish to {topic!r} failed: {reason}")


class EventBusSubscribeError(EventBusError):
    """The broker refused the subscription to ``topic_filter`` (e.g. not authorised by its ACL)."""

    def __init__(self, topic_filter: str, reason: str) -> None:
        self.topic_filter = topic_filter
        self.reason = reason
        super().__init__(f"subscribe to {topic_filter!r} failed: {reason}")


class BrokerError(EventBusError):
    """Base class of the errors of the managed mosquitto process."""


class BrokerNotInstalledError(BrokerError):
    """No mosquitto binary was found (``searched`` lists the places looked at)."""

    def __init__(self, program: str, searched: tuple[str, ...]) -> None:
        self.program = program
        self.searched = searched
        super().__init__(
            f"{program} not found (looked in {', '.join(searched)}): install the Debian package mosquitto"
        )


class BrokerStartError(BrokerError):
    """mosquitto did not come up on ``port``; ``log_tail`` holds the end of its log."""

    def __init__(self, port: int, reason: str, log_tail: str) -> None:
        self.port = port
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(
            f"mosquitto on port {port} did not start: {reason}\n--- mosquitto log (tail) ---\n{log_tail}"
        )


class BrokerPortInUseError(BrokerStartError, ServeError):
    """mosquitto could not bind ``port``: another process (often the system's mosquitto service) holds it."""

    def __init__(self, host: str, port: int, log_tail: str) -> None:
        # ServeError's message, not BrokerStartError's: the log tail only repeats "Address already in use".
        reason = "the port is in use (the system's mosquitto service? change mqttServerInternal)"
        ServeError.__init__(self, "mosquitto", f"{host}:{port}", reason)
        self.port = port
        self.log_tail = log_tail

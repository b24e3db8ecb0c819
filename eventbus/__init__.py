"""The MQTT side of the edge: KubeEdge's topic contract, an async client and a managed mosquitto."""

__all__: list[str] = []

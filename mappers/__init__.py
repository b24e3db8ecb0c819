"""Mappers: separate processes that drive devices and speak only MQTT with the edge."""

__all__: list[str] = []

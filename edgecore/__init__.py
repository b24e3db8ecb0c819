"""The edge daemon: composes EventBus, DeviceTwin and, later, EdgeHub, MetaManager and Edged."""

__all__: list[str] = []

"""The edge-cloud link: beehive message model, CloudHub / EdgeHub, join and certificates."""

__all__: list[str] = []

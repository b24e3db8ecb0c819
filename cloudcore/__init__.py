"""The cloud daemon: CloudHub, EdgeController and DeviceController."""

__all__: list[str] = []

"""DeviceTwin: desired and reported device state, kept in SQLite and served over the EventBus."""

__all__: list[str] = []

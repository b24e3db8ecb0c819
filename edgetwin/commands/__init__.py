"""Sub-commands of the `edgetwin` CLI, one module each."""

"""Sub-commands of the `t5-compact` CLI, one module each (see `t5_compact.cli`)."""

"""The daemon: entry point, configuration, supervisor, signals, logging and metrics."""

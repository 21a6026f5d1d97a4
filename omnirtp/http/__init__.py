"""The HTTP listener (``listen-http`` / ``listen-https``): ping, metrics,
sessions, statistics, the CLI and ng over HTTP."""

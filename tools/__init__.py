"""Development tools run from the repository (``python -m tools.<tool>``); never installed."""

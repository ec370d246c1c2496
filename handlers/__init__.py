"""Slack surfaces: one module per surface, each with a `register(app)` function."""

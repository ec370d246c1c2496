"""The delivery engine: the outbox, the dispatcher's passes, escalation steps."""

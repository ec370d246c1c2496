"""Durable work after a Slack ack: a click's or a slash command's job, written after its ack
and run by a dispatcher process (docs/reference/slack.md, "Acknowledging"; docs/operations.md,
"Slack jobs")."""

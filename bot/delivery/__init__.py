"""Delivery: the outbox of every message the bot owes, and the dispatcher that sends it.

One path serves every kind of row (prompt, alert, card, escalation step and its messages):
`compose` decides what a row means now, `send` finds it already sent or sends it, `confirm`
records it, `failures` settles what went wrong; `dispatcher` runs passes over due rows and
`wakeups` decides when. Delivery knows channels only through `bot.channels.base`.
"""

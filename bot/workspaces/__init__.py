"""Partner workspaces (docs/partner-workspaces.md): Bolt's OAuth v2 install into a partner
agency's own Slack, the installations kept in the bot's database with their tokens encrypted
(`tokens`, `store`), and which workspace a request or a person belongs to (`identity`)."""

"""Ways of reaching people: the Slack Web API edge."""

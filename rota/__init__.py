"""The rota domain: who works when, the UK working-time calendar, routing and escalation."""

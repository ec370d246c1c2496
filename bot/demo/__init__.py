"""`handover demo`: a simulated weekend through the real bot, told as text and HTML."""

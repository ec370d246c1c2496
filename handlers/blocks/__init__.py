"""Pure Block Kit builders: functions that return dicts, tested without mocks."""

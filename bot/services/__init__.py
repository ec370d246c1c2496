"""Services behind every surface: intake, responses, the log, reports, the audit writer."""

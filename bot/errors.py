"""The few error types that cross layers; each maps to one CLI exit code and HTTP status."""

from __future__ import annotations


class HandoverError(Exception):
    exit_code = 1


class InputError(HandoverError):
    """The user's input is invalid; the message says what and where (exit 1)."""

    exit_code = 1


class UsageError(HandoverError):
    """The command line is used wrongly: options that do not go together (exit 2)."""

    exit_code = 2


class ServiceUnavailable(HandoverError):
    """The database or Slack cannot be reached (exit 3, HTTP 503)."""

    exit_code = 3

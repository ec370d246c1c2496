"""Workspace tokens encrypted at rest under HANDOVER_TOKEN_KEY (Fernet; MultiFernet to rotate).

HANDOVER_TOKEN_KEY holds one Fernet key or several joined by commas: the first encrypts, every
one decrypts, so a new key is brought in without downtime and `handover workspaces rekey`
re-encrypts what is stored under the first (docs/partner-workspaces.md, "Rotating the key").
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

# Marks a stored value as ciphertext, so a plaintext token never passes for one.
PREFIX = "fernet:"


class TokenKeyError(ValueError):
    """HANDOVER_TOKEN_KEY is malformed, or a stored token is not readable under it."""


def parse_token_keys(value: str) -> tuple[str, ...]:
    """The keys of HANDOVER_TOKEN_KEY, first the one that encrypts; the error names no key."""
    keys = tuple(part.strip() for part in value.split(",") if part.strip())
    if not keys:
        raise TokenKeyError("HANDOVER_TOKEN_KEY is empty")
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise TokenKeyError(
                f"HANDOVER_TOKEN_KEY key {position} of {len(keys)} is not a Fernet key (32 "
                "url-safe base64-encoded bytes); make one with: python -c 'from "
                "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            ) from None
    return keys


class TokenCipher:
    """Encrypts tokens under the first key and decrypts under any (MultiFernet)."""

    def __init__(self, keys: tuple[str, ...] | str) -> None:
        if isinstance(keys, str):
            keys = parse_token_keys(keys)
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def encrypt(self, token: str | None) -> str | None:
        """The stored form of a token (None stays None)."""
        if token is None:
            return None
        return PREFIX + self._fernet.encrypt(token.encode("utf-8")).decode("ascii")

    def decrypt(self, stored: str | None) -> str | None:
        """The token of a stored value; TokenKeyError when no key opens it."""
        if stored is None:
            return None
        return self._open(stored, self._fernet.decrypt).decode("utf-8")

    def rotate(self, stored: str | None) -> str | None:
        """The same token encrypted under the first key (what `workspaces rekey` writes)."""
        if stored is None:
            return None
        return PREFIX + self._open(stored, self._fernet.rotate).decode("ascii")

    @staticmethod
    def _open(stored: str, operation: Callable[[bytes], bytes]) -> bytes:
        """`operation` (decrypt or rotate) on the ciphertext of a stored value."""
        if not stored.startswith(PREFIX):
            raise TokenKeyError("a stored workspace token is not encrypted")
        try:
            return operation(stored[len(PREFIX) :].encode("ascii"))
        except InvalidToken:
            raise TokenKeyError(
                "a stored workspace token opens under no key of HANDOVER_TOKEN_KEY"
            ) from None

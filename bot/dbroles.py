"""`handover db create-runtime-role NAME`: a PostgreSQL role for `serve` and `dispatch` that may
append to the audit log but never alter it (docs/security.md).

The tables' owner (the migration role) keeps ALTER, DISABLE TRIGGER and TRUNCATE; the runtime
role gets SELECT, INSERT, UPDATE and DELETE on the working tables, SELECT and INSERT on
`audit_log`, SELECT, INSERT and UPDATE on the chain head `audit_chain` (no DELETE), SELECT on
`alembic_version`, and nothing else: it is not a superuser, owns nothing, cannot create roles or
databases and is not a member of the owner. Running the command again (after `db upgrade`)
re-applies exactly these grants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text

from bot.errors import InputError

ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
WORKING_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
# Tables the runtime role may not use as it uses the others.
RESTRICTED = {
    "audit_log": "SELECT, INSERT",
    "audit_chain": "SELECT, INSERT, UPDATE",
    "alembic_version": "SELECT",
}


@dataclass(frozen=True)
class RuntimeRole:
    name: str
    created: bool  # False: it existed and its grants were re-applied
    owner: str
    tables: int


def create_runtime_role(engine: Engine, name: str, password: str | None = None) -> RuntimeRole:
    """Create (or bring back into line) the runtime role `name` on `engine`'s database."""
    if engine.dialect.name != "postgresql":
        raise InputError(
            "a runtime role needs PostgreSQL; with SQLite, protect the database file instead "
            "(see docs/security.md)"
        )
    if not ROLE_NAME.fullmatch(name):
        raise InputError(
            f"role name {name!r} must be lower-case letters, digits and _ (at most 63), "
            "starting with a letter or _"
        )
    with engine.begin() as conn:
        owner = conn.execute(
            text(
                "SELECT tableowner FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename = 'audit_log'"
            )
        ).scalar()
        if owner is None:
            raise InputError("the database has no audit_log: run `handover db upgrade` first")
        if name == owner:
            raise InputError(f"{name} owns the tables: the runtime role must be another role")
        created = _create_or_restrict(conn, name, password)
        if conn.execute(
            text("SELECT pg_has_role(:name, :owner, 'MEMBER')"), {"name": name, "owner": owner}
        ).scalar():
            raise InputError(
                f"{name} is a member of {owner}, the tables' owner: it could alter the log. "
                f"Run REVOKE {owner} FROM {name} first"
            )
        tables = _grant(conn, name, owner)
    return RuntimeRole(name=name, created=created, owner=owner, tables=tables)


def _create_or_restrict(conn: Connection, name: str, password: str | None) -> bool:
    exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).scalar()
    attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    verb = "ALTER" if exists else "CREATE"
    statement = f"{verb} ROLE {_quote(conn, name)} {attributes}"
    if password is not None:
        # Only a SCRAM verifier reaches the server (and its statement log), never the password.
        raw = conn.connection.driver_connection
        verifier = raw.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256")
        statement += " PASSWORD " + _literal(verifier.decode("ascii"))
    conn.exec_driver_sql(statement)
    return not exists


def _grant(conn: Connection, name: str, owner: str) -> int:
    role, owner_role = _quote(conn, name), _quote(conn, owner)
    database = _quote(conn, conn.execute(text("SELECT current_database()")).scalar())
    statements = [
        f"GRANT CONNECT ON DATABASE {database} TO {role}",
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}",
        f"GRANT {WORKING_PRIVILEGES} ON ALL TABLES IN SCHEMA public TO {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
        # Tables a later migration creates are usable at once; rerun this after `db upgrade`
        # to restrict any new append-only table.
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner_role} IN SCHEMA public "
        f"GRANT {WORKING_PRIVILEGES} ON TABLES TO {role}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner_role} IN SCHEMA public "
        f"GRANT USAGE, SELECT ON SEQUENCES TO {role}",
    ]
    for table, privileges in RESTRICTED.items():
        statements += [
            f"REVOKE ALL ON {table} FROM {role}",
            f"GRANT {privileges} ON {table} TO {role}",
        ]
    for statement in statements:
        conn.exec_driver_sql(statement)
    return int(
        conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")).scalar()
    )


def _quote(conn: Connection, identifier: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(identifier)


def _literal(value: str) -> str:
    """A SQL string literal (standard_conforming_strings: only quotes are doubled)."""
    return "'" + value.replace("'", "''") + "'"

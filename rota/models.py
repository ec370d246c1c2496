"""SQLAlchemy models of the rota store: teams, people, shifts, absences, closures, versions."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Time,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """An aware datetime stored as naive UTC, identical on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """An aware instant as the naive UTC the column stores; a naive one is refused."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """The stored naive UTC as an aware instant in UTC."""
        if value is None:
            return None
        # value.replace(tzinfo=UTC), at a quarter of its cost (replace parses keywords): every
        # instant read goes through here, a million of them for `handover log` over a long log.
        return datetime.combine(value, value.timetz(), UTC)


class Base(DeclarativeBase):
    """Every table's base, the bot's too: constraints named by NAMING_CONVENTION."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class RotaVersion(Base):
    """One rota import: its version, when it was made, its files and its counts."""

    __tablename__ = "rota_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime())
    files: Mapped[str] = mapped_column(Text)  # comma-separated file names
    summary: Mapped[str] = mapped_column(Text)  # JSON object of counts


class Team(Base):
    """A team of teams.csv."""

    __tablename__ = "teams"

    team_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    agency: Mapped[str] = mapped_column(String(200))
    agency_type: Mapped[str] = mapped_column(String(20))
    region: Mapped[str] = mapped_column(String(20))
    hours: Mapped[str | None] = mapped_column(String(500))  # None: Mon-Fri 09:00-17:00
    manager_id: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str | None] = mapped_column(String(32))
    # The Slack team ID (T…) of the partner workspace its people use; None: the home workspace.
    workspace: Mapped[str | None] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Person(Base):
    """A person of people.csv."""

    __tablename__ = "people"

    person_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slack_user: Mapped[str | None] = mapped_column(String(32))  # as given in people.csv
    slack_user_found: Mapped[str | None] = mapped_column(String(32))  # looked up by email
    email: Mapped[str | None] = mapped_column(String(254))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.team_id"), index=True)
    role: Mapped[str] = mapped_column(String(100))
    hours: Mapped[str | None] = mapped_column(String(500))  # None: the team's hours
    deputy_id: Mapped[str | None] = mapped_column(String(64))
    permissions: Mapped[str] = mapped_column(String(100), default="")  # ';'-joined
    # How prompts reach them (one of CONTACT_METHODS): the optional `contact` column.
    contact: Mapped[str] = mapped_column(String(16), default="slack", server_default="slack")
    # A work phone shown to the social worker who must call them back: the optional `phone`.
    phone: Mapped[str | None] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    __table_args__ = (
        Index("ix_people_slack_user", "slack_user"),
        Index("ix_people_slack_user_found", "slack_user_found"),
        Index("ix_people_email", "email"),
    )

    @property
    def slack_user_id(self) -> str | None:
        """Their Slack user ID: as people.csv gives it, else as looked up by their email."""
        return self.slack_user or self.slack_user_found

    def has_permission(self, permission: str) -> bool:
        """Whether `permission` (one of PERMISSIONS) is among theirs."""
        return permission in self.permissions.split(";")


class Shift(Base):
    """A shift of shifts.csv: a person holding a role from start_at to end_at."""

    __tablename__ = "shifts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.person_id"))
    role: Mapped[str] = mapped_column(String(100))
    start_at: Mapped[datetime] = mapped_column(UTCDateTime())
    end_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        # end_at and person_id too, so "who holds this role at t" reads the index alone.
        Index("ix_shifts_role_start", "role", "start_at", "end_at", "person_id"),
        Index("ix_shifts_person_start", "person_id", "start_at"),
        Index("ix_shifts_start", "start_at"),
    )


class NamedRole(Base):
    """A role some shift has named, kept when the shifts naming it are replaced.

    A role no shift has ever named is unknown input, and a known role with nobody on shift is
    unroutable (docs/reference/http.md): a new shifts.csv without a role must not turn the
    referrals naming it into errors.
    """

    __tablename__ = "named_roles"

    role: Mapped[str] = mapped_column(String(100), primary_key=True)


class Absence(Base):
    """An absence of absences.csv: whole days, start_date to end_date inclusive."""

    __tablename__ = "absences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("people.person_id"))
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)  # inclusive
    reason: Mapped[str] = mapped_column(String(200), default="")

    __table_args__ = (Index("ix_absences_person_start", "person_id", "start_date"),)


class Closure(Base):
    """A closure of closures.csv: a day, or part of it, closed for all, a region or a team."""

    __tablename__ = "closures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    date: Mapped[date] = mapped_column(Date, index=True)
    applies_to: Mapped[str] = mapped_column(String(64))  # all | region | team_id
    from_time: Mapped[time | None] = mapped_column(Time)  # None: start of day
    to_time: Mapped[time | None] = mapped_column(Time)  # None: end of day
    reason: Mapped[str] = mapped_column(String(200), default="")


# Rota constants shared by the importer, calendar and planner.
MAX_SHIFT_HOURS = 168  # a week on call; longer shifts are refused at import
AGENCY_TYPES = ("social_care", "police", "health", "probation", "education", "other")
REGIONS = ("england", "wales", "scotland", "northern_ireland")
PERMISSIONS = ("referrer", "manager", "oversight")
# people.csv's optional `contact` column: how prompts reach a person (the first is the default).
CONTACT_METHODS = ("slack", "email", "slack+email")

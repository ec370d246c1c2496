"""Problems found in rota files, each printed with its place (docs/reference/rota-files.md)."""

from __future__ import annotations

from dataclasses import dataclass

# Problems kept in memory; the rest are only counted (a wrong file can have a million).
PROBLEM_LIMIT = 10_000


@dataclass(frozen=True)
class Problem:
    """One problem in a rota file.

    Printed as `FILE:LINE: column: message` for a CSV file, `FILE:SHEET:ROW: column: message`
    for a sheet of a workbook and `FILE:EVENT n: field: message` for an iCalendar file.
    """

    file: str
    line: int  # the line of a CSV file, the row of a sheet, or the event of a calendar
    column: str  # a column name, `header`, or `-` for the whole row or file
    message: str
    sheet: str | None = None
    event: bool = False  # `line` counts the events of an iCalendar file

    @property
    def place(self) -> str:
        """Where the problem is: `FILE:LINE`, `FILE:SHEET:ROW` or `FILE:EVENT n`."""
        if self.event:
            return f"{self.file}:EVENT {self.line}"
        if self.sheet is not None:
            return f"{self.file}:{self.sheet}:{self.line}"
        return f"{self.file}:{self.line}"

    def __str__(self) -> str:
        return f"{self.place}: {self.column}: {self.message}"


class RotaImportError(Exception):
    """The rota files have problems; nothing was changed."""

    def __init__(self, problems: list[Problem], total: int | None = None) -> None:
        self.problems = problems
        self.total = max(total or 0, len(problems))  # problems beyond PROBLEM_LIMIT are counted
        super().__init__(f"{self.total} problem(s) in the rota files; nothing imported")


class DeactivationRefused(RotaImportError):
    """The import would deactivate too many people or teams at once (a truncated file?)."""


class ProblemLog:
    """Collects problems, keeping the first PROBLEM_LIMIT and counting all."""

    def __init__(self) -> None:
        self.items: list[Problem] = []
        self.total = 0
        self._limit = PROBLEM_LIMIT
        self._order: dict[tuple[str, str | None], int] = {}

    def place_order(self, file: str, sheet: str | None = None) -> None:
        """Problems of this file (and sheet) are listed after those of places named before."""
        self._order.setdefault((file, sheet), len(self._order))

    def add(
        self,
        file: str,
        line: int,
        column: str,
        message: str,
        *,
        sheet: str | None = None,
        event: bool = False,
    ) -> None:
        """Note a problem at a file's line and column (kept if under the limit, always counted)."""
        self.total += 1
        if len(self.items) < self._limit:
            self.items.append(Problem(file, line, column, message, sheet, event))

    def raise_if_any(self) -> None:
        """Raise RotaImportError with every problem, by place then line, if there are any."""
        if not self.total:
            return
        raise RotaImportError(self.sorted(), self.total)

    def sorted(self) -> list[Problem]:
        """The kept problems by place (in the order the places were named), then line."""
        last = len(self._order)

        def key(problem: Problem) -> tuple[int, int]:
            own = self._order.get((problem.file, problem.sheet))
            if own is None:
                own = self._order.get((problem.file, None), last)
            return (own, problem.line)

        return sorted(self.items, key=key)

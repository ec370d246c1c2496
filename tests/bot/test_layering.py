"""The data model and the services behind Slack do not depend on the Slack layer (`handlers`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bot
from bot.delivery.kinds import RESPONSE_KINDS

BOT = Path(bot.__file__).parent
DOMAIN_MODULES = (
    "models",
    "services/intake",
    "services/responses",
    "services/logbook",
    "services/reports",
)


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


@pytest.mark.parametrize("module", DOMAIN_MODULES)
def test_module_does_not_import_the_slack_layer(module: str) -> None:
    imports = imported_modules(BOT / f"{module}.py")
    assert sorted(m for m in imports if m == "handlers" or m.startswith("handlers.")) == []


def test_the_slack_layer_takes_its_vocabulary_from_the_domain() -> None:
    from bot import models
    from handlers import ids

    assert ids.CATEGORIES is models.CATEGORIES
    assert ids.URGENCIES is models.URGENCIES
    assert ids.RESPONSE_KIND_BY_ACTION == {
        "handover_ack": "acknowledged",
        "handover_has_info": "has_information",
        "handover_not_known": "not_known",
        "handover_redirect": "redirected",
    }
    assert set(ids.RESPONSE_KIND_BY_ACTION.values()) == set(RESPONSE_KINDS)

"""The table of Web API methods and arguments the stand-in checks every call against."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class MethodSpec:
    """The argument names one simulated method accepts and requires."""

    name: str
    arguments: frozenset[str]
    required: tuple[str, ...]
    one_of: tuple[tuple[str, ...], ...]

    def problems(self, args: Mapping[str, Any]) -> list[str]:
        """Return Slack-style ``[ERROR]`` messages for unknown or missing arguments."""
        messages = [
            f"[ERROR] unknown argument '{name}'"
            for name in sorted(args)
            if name not in self.arguments
        ]
        messages += [
            f"[ERROR] missing required argument '{name}'"
            for name in self.required
            if _is_missing(args.get(name))
        ]
        for group in self.one_of:
            if all(_is_missing(args.get(name)) for name in group):
                names = " or ".join(f"'{name}'" for name in group)
                messages.append(f"[ERROR] missing required argument {names}")
        return messages


@dataclass(frozen=True)
class SpecTable:
    """Every method name the Web API spec knows, and the specs of the simulated ones."""

    known_methods: frozenset[str]
    methods: Mapping[str, MethodSpec]

    def is_known(self, method: str) -> bool:
        """Whether Slack has a method of this name (simulated or not)."""
        return method in self.known_methods


def _is_missing(value: Any) -> bool:
    return value is None or value == ""


def parse_table(raw: Mapping[str, Any]) -> SpecTable:
    """Build a SpecTable from the JSON written by ``build_specs``."""
    global_arguments = frozenset(raw["global_arguments"])
    methods = {
        name: MethodSpec(
            name=name,
            arguments=frozenset(entry["arguments"]) | global_arguments,
            required=tuple(entry["required"]),
            one_of=tuple(tuple(group) for group in entry["one_of"]),
        )
        for name, entry in raw["methods"].items()
    }
    return SpecTable(known_methods=frozenset(raw["known_methods"]), methods=methods)


@cache
def load_spec_table() -> SpecTable:
    """Load the committed ``methods.json`` from the installed package."""
    text = resources.files(__package__).joinpath("methods.json").read_text(encoding="utf-8")
    return parse_table(json.loads(text))

"""Block Kit limits, checked the way Slack checks them on messages, modals and Home tabs.

Each problem is reported in Slack's own style:
``[ERROR] must be less than 76 characters [json-pointer:/blocks/0/elements/0/text/text]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_MESSAGE_TEXT = 40_000

BLOCK_TYPES = frozenset(
    {
        "actions",
        "context",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "table",
        "video",
    }
)

ELEMENT_TYPES = frozenset(
    {
        "button",
        "channels_select",
        "checkboxes",
        "conversations_select",
        "datepicker",
        "datetimepicker",
        "email_text_input",
        "external_select",
        "file_input",
        "image",
        "multi_channels_select",
        "multi_conversations_select",
        "multi_external_select",
        "multi_static_select",
        "multi_users_select",
        "number_input",
        "overflow",
        "plain_text_input",
        "radio_buttons",
        "rich_text_input",
        "static_select",
        "timepicker",
        "url_text_input",
        "users_select",
        "workflow_button",
    }
)

# Elements that offer options; Slack checks their initial choice is one of them.
SELECT_WITH_OPTIONS = frozenset(
    {"static_select", "multi_static_select", "checkboxes", "radio_buttons", "overflow"}
)


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, message: str, pointer: str) -> None:
        self.problems.append(f"[ERROR] {message} [json-pointer:{pointer}]")

    def text_object(
        self,
        value: Any,
        pointer: str,
        *,
        max_length: int,
        plain_only: bool = False,
    ) -> None:
        if not isinstance(value, dict):
            self.add("must be a text object", pointer)
            return
        kind = value.get("type")
        allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
        if kind not in allowed:
            self.add(f"type must be one of {', '.join(allowed)}", f"{pointer}/type")
        text = value.get("text")
        if not isinstance(text, str) or not text:
            self.add("must be a non-empty string", f"{pointer}/text")
        elif len(text) > max_length:
            self.add(f"must be less than {max_length + 1} characters", f"{pointer}/text")

    def identifier(self, owner: dict[str, Any], key: str, pointer: str) -> None:
        value = owner.get(key)
        if value is None:
            return
        if not isinstance(value, str) or not value:
            self.add("must be a non-empty string", f"{pointer}/{key}")
        elif len(value) > 255:
            self.add("must be less than 256 characters", f"{pointer}/{key}")

    def option(self, option: Any, pointer: str) -> None:
        if not isinstance(option, dict):
            self.add("must be an option object", pointer)
            return
        self.text_object(option.get("text"), f"{pointer}/text", max_length=75)
        value = option.get("value")
        if value is not None and (not isinstance(value, str) or len(value) > 150):
            self.add("must be a string of at most 150 characters", f"{pointer}/value")

    def options_of(self, element: dict[str, Any], pointer: str) -> list[dict[str, Any]]:
        options = element.get("options")
        groups = element.get("option_groups")
        collected: list[dict[str, Any]] = []
        if isinstance(options, list):
            if len(options) > 100:
                self.add("must have at most 100 items", f"{pointer}/options")
            for index, option in enumerate(options):
                self.option(option, f"{pointer}/options/{index}")
                if isinstance(option, dict):
                    collected.append(option)
        if isinstance(groups, list):
            for g_index, group in enumerate(groups):
                group_options = group.get("options") if isinstance(group, dict) else None
                if not isinstance(group_options, list):
                    self.add("must have options", f"{pointer}/option_groups/{g_index}")
                    continue
                for index, option in enumerate(group_options):
                    self.option(option, f"{pointer}/option_groups/{g_index}/options/{index}")
                    if isinstance(option, dict):
                        collected.append(option)
        if element.get("type") != "overflow" and options is None and groups is None:
            self.add("must provide options or option_groups", pointer)
        return collected

    def element(self, element: Any, pointer: str) -> None:
        if not isinstance(element, dict):
            self.add("must be an element object", pointer)
            return
        kind = element.get("type")
        if kind not in ELEMENT_TYPES:
            self.add(f"unknown element type '{kind}'", f"{pointer}/type")
            return
        self.identifier(element, "action_id", pointer)
        if kind == "button":
            self.text_object(element.get("text"), f"{pointer}/text", max_length=75, plain_only=True)
            value = element.get("value")
            if value is not None and (not isinstance(value, str) or len(value) > 2000):
                self.add("must be a string of at most 2000 characters", f"{pointer}/value")
            url = element.get("url")
            if url is not None and (not isinstance(url, str) or len(url) > 3000):
                self.add("must be a string of at most 3000 characters", f"{pointer}/url")
            style = element.get("style")
            if style is not None and style not in ("primary", "danger"):
                self.add("must be one of primary, danger", f"{pointer}/style")
        if "placeholder" in element:
            self.text_object(
                element["placeholder"], f"{pointer}/placeholder", max_length=150, plain_only=True
            )
        if kind in SELECT_WITH_OPTIONS:
            options = self.options_of(element, pointer)
            # Slack refuses an initial option that is not among the options offered.
            offered = [(o.get("value"), (o.get("text") or {}).get("text")) for o in options]
            initial = element.get("initial_options") or []
            if "initial_option" in element:
                initial = [element["initial_option"]]
            for index, chosen in enumerate(initial if isinstance(initial, list) else []):
                key = (
                    (chosen.get("value"), (chosen.get("text") or {}).get("text"))
                    if isinstance(chosen, dict)
                    else None
                )
                if key not in offered:
                    name = "initial_option" if "initial_option" in element else "initial_options"
                    where = f"{pointer}/{name}" + ("" if name == "initial_option" else f"/{index}")
                    self.add("must match one of the options", where)

    def elements(
        self,
        elements: Any,
        pointer: str,
        *,
        max_items: int,
        check: Callable[[Any, str], None],
    ) -> None:
        if not isinstance(elements, list) or not elements:
            self.add("must be a non-empty array", pointer)
            return
        if len(elements) > max_items:
            self.add(f"must have at most {max_items} items", pointer)
        seen: set[str] = set()
        for index, element in enumerate(elements):
            check(element, f"{pointer}/{index}")
            action_id = element.get("action_id") if isinstance(element, dict) else None
            if isinstance(action_id, str):
                if action_id in seen:
                    self.add(
                        f"action_id '{action_id}' is already used in this block",
                        f"{pointer}/{index}/action_id",
                    )
                seen.add(action_id)

    def context_element(self, element: Any, pointer: str) -> None:
        if isinstance(element, dict) and element.get("type") in ("plain_text", "mrkdwn"):
            self.text_object(element, pointer, max_length=3000)
        elif isinstance(element, dict) and element.get("type") == "image":
            self.image(element, pointer)
        else:
            self.add("must be a text or image element", pointer)

    def image(self, image: dict[str, Any], pointer: str) -> None:
        if not image.get("image_url") and not image.get("slack_file"):
            self.add("must provide image_url or slack_file", pointer)
        alt = image.get("alt_text")
        if not isinstance(alt, str) or not alt:
            self.add("must be a non-empty string", f"{pointer}/alt_text")
        elif len(alt) > 2000:
            self.add("must be less than 2001 characters", f"{pointer}/alt_text")

    def block(self, block: Any, pointer: str) -> None:
        if not isinstance(block, dict):
            self.add("must be a block object", pointer)
            return
        kind = block.get("type")
        if kind not in BLOCK_TYPES:
            self.add(f"unknown block type '{kind}'", f"{pointer}/type")
            return
        self.identifier(block, "block_id", pointer)
        if kind == "section":
            if "text" not in block and "fields" not in block:
                self.add("must provide text or fields", pointer)
            if "text" in block:
                self.text_object(block["text"], f"{pointer}/text", max_length=3000)
            fields = block.get("fields")
            if fields is not None:
                if not isinstance(fields, list) or len(fields) > 10:
                    self.add("must be an array of at most 10 items", f"{pointer}/fields")
                else:
                    for index, field in enumerate(fields):
                        self.text_object(field, f"{pointer}/fields/{index}", max_length=2000)
            if "accessory" in block:
                self.element(block["accessory"], f"{pointer}/accessory")
        elif kind == "header":
            self.text_object(block.get("text"), f"{pointer}/text", max_length=150, plain_only=True)
        elif kind == "actions":
            self.elements(
                block.get("elements"), f"{pointer}/elements", max_items=25, check=self.element
            )
        elif kind == "context":
            self.elements(
                block.get("elements"),
                f"{pointer}/elements",
                max_items=10,
                check=self.context_element,
            )
        elif kind == "input":
            self.text_object(
                block.get("label"), f"{pointer}/label", max_length=2000, plain_only=True
            )
            if "hint" in block:
                self.text_object(block["hint"], f"{pointer}/hint", max_length=2000, plain_only=True)
            if "element" not in block:
                self.add("must provide an element", pointer)
            else:
                self.element(block["element"], f"{pointer}/element")
        elif kind == "image":
            self.image(block, pointer)
            if "title" in block:
                self.text_object(
                    block["title"], f"{pointer}/title", max_length=2000, plain_only=True
                )

    def blocks(self, blocks: Any, pointer: str, *, max_blocks: int) -> None:
        if not isinstance(blocks, list):
            self.add("must be an array of blocks", pointer)
            return
        if len(blocks) > max_blocks:
            self.add(f"no more than {max_blocks} items allowed", pointer)
        seen: set[str] = set()
        for index, block in enumerate(blocks):
            self.block(block, f"{pointer}/{index}")
            block_id = block.get("block_id") if isinstance(block, dict) else None
            if isinstance(block_id, str):
                if block_id in seen:
                    self.add(f"duplicate block_id '{block_id}'", f"{pointer}/{index}/block_id")
                seen.add(block_id)


def check_message_blocks(blocks: Any) -> list[str]:
    """Return the problems with a message's ``blocks`` (empty when valid)."""
    checker = _Checker()
    checker.blocks(blocks, "/blocks", max_blocks=MAX_MESSAGE_BLOCKS)
    return checker.problems


def check_view(view: Any, *, allowed_types: tuple[str, ...]) -> list[str]:
    """Return the problems with a modal or Home tab view (empty when valid)."""
    checker = _Checker()
    if not isinstance(view, dict):
        checker.add("must be a view object", "/view")
        return checker.problems
    kind = view.get("type")
    if kind not in allowed_types:
        checker.add(f"type must be one of {', '.join(allowed_types)}", "/view/type")
    if kind == "modal":
        checker.text_object(view.get("title"), "/view/title", max_length=24, plain_only=True)
        for button in ("submit", "close"):
            if button in view:
                checker.text_object(view[button], f"/view/{button}", max_length=24, plain_only=True)
        has_input = any(
            isinstance(block, dict) and block.get("type") == "input"
            for block in view.get("blocks") or []
        )
        if has_input and "submit" not in view:
            checker.add("a modal with input blocks must have a submit button", "/view/submit")
    for key in ("callback_id", "external_id"):
        checker.identifier(view, key, "/view")
    private_metadata = view.get("private_metadata")
    if private_metadata is not None and (
        not isinstance(private_metadata, str) or len(private_metadata) > 3000
    ):
        checker.add("must be a string of at most 3000 characters", "/view/private_metadata")
    checker.blocks(view.get("blocks"), "/view/blocks", max_blocks=MAX_VIEW_BLOCKS)
    return checker.problems

"""Writes the hostile Slack request corpus in tests/chaos/corpus/ (run from the repository root:
`python -m tests.chaos.make_corpus`); the files are committed, so the corpus only grows.

Each file is one raw request body. Its extension is the Content-Type it is sent with:
`.form` application/x-www-form-urlencoded, `.json` application/json, `.txt` text/plain,
`.bin` application/octet-stream. `test_corpus.py` signs and sends every file to the real bot
(RESPONSE_URL is replaced by a local catcher's URL first). Files named `bad-*` are malformed
beyond what Bolt can parse and must get exactly 400; every other file gets a 2xx or 4xx, and
nothing may be logged as an error.

The shapes are Slack's (tests/data/slack-samples, as built by
tests/handlers/slack_payloads.py); the mutations are those a fuzzer found to break Bolt's
parsing or the handlers: values of the wrong type, missing fields, invalid UTF-8, deep nesting.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tests.handlers.slack_payloads import (
    app_home_opened,
    block_actions,
    block_suggestion,
    slack_user,
    slash_command,
    view_submission,
)

CORPUS = Path(__file__).resolve().parent / "corpus"
RESPONSE_URL = "RESPONSE_URL"
DEEP = 1100  # past the JSON parser's recursion limit

ODD_VALUES: dict[str, Any] = {
    "null": None,
    "number": 5,
    "true": True,
    "string": "x",
    "surrogate": "\ud800",
    "nul": "a\x00b",
    "list": ["x"],
    "empty-object": {},
    "id-number": {"id": 5},
}
FEW_ODD_VALUES = ("null", "number", "list", "empty-object")


def _payload_form(payload: Any) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def _samples() -> dict[str, dict[str, Any]]:
    kpatel, amy = slack_user("hv-kpatel"), slack_user("edt-amy")
    click = block_actions(kpatel, "handover_ack", "1", channel_id="D0KPATEL", message_ts="1.2")
    click["actions"][0]["action_ts"] = "1700000000.000100"
    return {
        "block-actions": click,
        "has-info-submission": view_submission(
            kpatel,
            "handover_has_info_modal",
            private_metadata=json.dumps({"prompt_id": 1}),
            values={},
        ),
        "referral-submission": view_submission(
            amy, "handover_referral_modal", private_metadata="{}", values={}
        ),
        "view-closed": {
            **view_submission(amy, "handover_referral_modal", private_metadata="", values={}),
            "type": "view_closed",
            "is_cleared": False,
        },
        "block-suggestion": block_suggestion(amy, "notify_people_select", "notify_people", "jo"),
        "message-shortcut": {
            "type": "message_action",
            "callback_id": "unknown_shortcut",
            "trigger_id": "1.2.3",
            "team": {"id": "T0STANDIN", "domain": "handover-standin"},
            "user": {"id": amy, "name": "amy"},
            "channel": {"id": "C0EDTCARDS", "name": "edt"},
            "message": {"type": "message", "ts": "1.2", "text": "hi"},
            "response_url": RESPONSE_URL,
        },
    }


def _event() -> dict[str, Any]:
    return app_home_opened("Ev0CORPUS01", slack_user("edt-amy"), at=1_700_000_000.0001)


def _mutations(
    sample: dict[str, Any], *, nested: bool = True
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each top-level field missing or of each odd type; each nested field of a few."""
    for key in sample:
        removed = copy.deepcopy(sample)
        del removed[key]
        yield f"{key}-missing", removed
        for name, value in ODD_VALUES.items():
            changed = copy.deepcopy(sample)
            changed[key] = copy.deepcopy(value)
            yield f"{key}-{name}", changed
        if nested and isinstance(sample[key], dict):
            for sub in sample[key]:
                for name in FEW_ODD_VALUES:
                    changed = copy.deepcopy(sample)
                    changed[key][sub] = copy.deepcopy(ODD_VALUES[name])
                    yield f"{key}.{sub}-{name}", changed
    if isinstance(sample.get("actions"), list):
        for sub in sample["actions"][0]:
            for name in FEW_ODD_VALUES:
                changed = copy.deepcopy(sample)
                changed["actions"][0][sub] = copy.deepcopy(ODD_VALUES[name])
                yield f"actions.0.{sub}-{name}", changed


def _command_cases() -> Iterator[tuple[str, bytes]]:
    base = slash_command(slack_user("edt-amy"), "help", response_url=RESPONSE_URL)
    for key in base:
        removed = {k: v for k, v in base.items() if k != key}
        yield f"command--{key}-missing", urlencode(removed).encode()
        yield f"command--{key}-empty", urlencode({**base, key: ""}).encode()
        yield f"command--{key}-nul", urlencode({**base, key: "a\x00b"}).encode()
    texts = {
        "close-no-reason": "close HO-TEST01",
        "close-surrogate": "close HO-TEST01 \ud800 reason",
        "close-nul": "close HO-TEST01 dup\x00licate",
        "close-huge": "close HO-TEST01 " + "x" * 20_000,
        "log-weird": "log \u202e\u0000\ufeff",
        "oncall-emoji": "oncall \U0001f600" * 50,
        "only-spaces": " " * 500,
        "unknown": "delete everything",
    }
    for name, text in texts.items():
        body = urlencode({**base, "text": text}, encoding="utf-8", errors="surrogatepass")
        yield f"command--text-{name}", body.encode()
    yield "command--repeated-user-id", (urlencode(base) + "&user_id=U0OTHER").encode()


def _raw_cases() -> Iterator[tuple[str, bytes]]:
    """Bodies no Slack request has: each must be answered 400 before Bolt parses it."""
    click = _samples()["block-actions"]
    form = _payload_form(click)
    yield "bad-form-invalid-utf8-escape.form", form.replace(b"hv", b"%FF%FE", 1)
    yield "bad-form-invalid-utf8-raw.form", b"payload=" + b"\xff\xfe\xfd"
    yield "bad-form-overlong-utf8.form", b"payload=%C0%AF"
    yield "bad-form-lone-continuation.form", b"payload=%80"
    yield "bad-json-invalid-utf8.json", b'{"type":"event_callback","x":"\xff"}'
    yield "bad-json-utf16.json", json.dumps(_event()).encode("utf-16")
    yield "bad-payload-not-json.form", b"payload=not-json"
    yield "bad-payload-empty.form", b"payload="
    yield "bad-payload-truncated.form", form[: len(form) // 2]
    yield "bad-payload-trailing-garbage.form", form + b"%7D%7D"
    yield (
        "bad-payload-nan.form",
        urlencode({"payload": '{"type":"block_actions","x":NaN}'}).encode(),
    )
    for name, value in (("list", []), ("string", "x"), ("number", 5), ("null", None)):
        yield f"bad-payload-{name}.form", _payload_form(value)
        yield f"bad-json-{name}.json", json.dumps(value).encode()
    yield "bad-payload-deep-list.form", _payload_form_text("[" * DEEP + "]" * DEEP)
    deep_object = '{"type":"block_actions","a":' + '{"a":' * DEEP + "1" + "}" * (DEEP + 1)
    yield "bad-payload-deep-object.form", _payload_form_text(deep_object)
    nested = '{"type":"block_actions","a":' + "[" * 60 + "]" * 60 + "}"
    yield "bad-payload-nested-60.form", _payload_form_text(nested)
    deep_event = json.dumps({**_event(), "x": 0})[:-1] + ',"d":' + "[" * DEEP + "]" * DEEP + "}"
    yield "bad-json-deep.json", deep_event.encode()
    yield "bad-payload-repeated.form", form + b"&" + form
    yield "bad-form-too-many-fields.form", "&".join(f"f{i}=1" for i in range(500)).encode()
    yield "bad-form-nothing-known.form", b"hello=world"
    yield "bad-form-empty.form", b""
    yield "bad-json-empty.json", b""
    yield "bad-json-whitespace.json", b"   \n"
    yield "bad-json-unknown-type.json", b'{"type":"something_else"}'
    yield "bad-json-no-type.json", b'{"event":{"type":"app_home_opened"}}'
    yield "bad-url-verification-no-challenge.json", b'{"type":"url_verification"}'
    yield "bad-url-verification-challenge-list.json", b'{"type":"url_verification","challenge":[]}'
    yield "bad-wrong-type-form-as-text.txt", form
    yield "bad-wrong-type-json-as-octets.bin", json.dumps(_event()).encode()
    yield "bad-wrong-type-form-as-json.json", form
    yield "bad-wrong-type-json-as-form.form", json.dumps(_event()).encode()
    yield "bad-unknown-payload-type.form", _payload_form({**click, "type": "dialog_submission"})


def _payload_form_text(text: str) -> bytes:
    return urlencode({"payload": text}).encode()


def corpus_files() -> Iterator[tuple[str, bytes]]:
    """(file name, raw body) of every request in the corpus."""
    yield from _raw_cases()
    for kind, sample in _samples().items():
        # Bolt routes these two by their top-level fields only; no listener reads deeper.
        nested = kind not in ("view-closed", "message-shortcut")
        for case, payload in _mutations(sample, nested=nested):
            body = urlencode(
                {"payload": json.dumps(payload)}, encoding="utf-8", errors="surrogatepass"
            )
            yield f"{kind}--{case}.form", body.encode()
    event = _event()
    for case, payload in _mutations(event):
        yield f"event--{case}.json", json.dumps(payload).encode()
    for name, body in _command_cases():
        yield f"{name}.form", body


def main() -> None:
    if CORPUS.exists():
        shutil.rmtree(CORPUS)
    CORPUS.mkdir()
    count = 0
    for name, body in corpus_files():
        path = CORPUS / name
        if path.exists():
            raise SystemExit(f"two corpus files named {name}")
        path.write_bytes(body)
        count += 1
    print(f"wrote {count} files to {CORPUS}")


if __name__ == "__main__":
    main()

"""Strict parsing of a teacher reply: one JSON object ``{"pairs": [...]}`` (``prompt.REPLY_SCHEMA``)."""

from __future__ import annotations

import json
import re

class MalformedReply(ValueError):
    """A reply that is not one JSON object ``{"pairs": [...]}`` (optionally in a ```json fence)."""


_FENCE = re.compile(r"\A```(?:json)?[ \t]*\n(?P<body>.*)\n[ \t]*```\Z", re.DOTALL)
_ITEM_KEYS = {"source", "target", "topic"}


def parse_reply(text: str) -> tuple[list[dict], int]:
    """The well-formed items of a teacher reply and the number of malformed items dropped.

    The reply must be exactly one JSON object ``{"pairs": [...]}`` (surrounding whitespace and a
    single ```json fence are tolerated, nothing else: no prose, no second object). Otherwise
    ``MalformedReply`` is raised. An item is well-formed when it is an object with exactly the keys
    source, target and topic, all strings; other items are counted as malformed. Item texts are
    data: nothing in them is interpreted.
    """
    if not isinstance(text, str):
        raise MalformedReply(f"reply is {type(text).__name__}, not text")
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group("body").strip()
    if not body:
        raise MalformedReply("reply is empty")
    try:
        data = json.loads(body)
    except json.JSONDecodeError as err:
        raise MalformedReply(f"reply is not one JSON object ({err.msg} at line {err.lineno} column {err.colno})") from None
    if not isinstance(data, dict) or set(data) != {"pairs"}:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise MalformedReply(f'reply must be an object with the single key "pairs", got {keys}')
    if not isinstance(data["pairs"], list):
        raise MalformedReply(f'"pairs" must be a list, got {type(data["pairs"]).__name__}')
    items, malformed = [], 0
    for item in data["pairs"]:
        if (isinstance(item, dict) and set(item) == _ITEM_KEYS
                and all(isinstance(item[k], str) for k in _ITEM_KEYS)):
            items.append({"source": item["source"], "target": item["target"], "topic": item["topic"]})
        else:
            malformed += 1
    return items, malformed


def parse_line(text: str, label: str) -> tuple[str, int]:
    """Translate mode: the translation in a plain-text reply, and how many further non-empty lines
    were dropped. The translation is the first non-empty line (lines end at any Unicode line
    break), stripped of a leading ``label:`` (e.g. "French:", any case). ``MalformedReply`` when
    there is no such line or only the label."""
    if not isinstance(text, str):
        raise MalformedReply(f"reply is {type(text).__name__}, not text")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise MalformedReply("reply is empty")
    first = re.sub(rf"\A{re.escape(label)}\s*:\s*", "", lines[0], flags=re.IGNORECASE).strip()
    if not first:
        raise MalformedReply(f"reply's first line is only the label {label!r}")
    return first, len(lines) - 1

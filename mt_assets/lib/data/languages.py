"""Language codes: validation, English names and ISO 639-3 codes (for Tatoeba files)."""

from __future__ import annotations

import re

import pycountry

READABLE_NAMES: dict[str, str] = {"el": "Greek", "ell": "Greek"}
"""Names for prompts where ISO 639's English name reads oddly ("Modern Greek (1453-)"); every
other code takes its ISO 639 name without a trailing parenthesis."""


def language(code: str, setting: str = "language"):
    """Look up an ISO 639-1 (two-letter) or 639-3 (three-letter) code; unknown codes raise."""
    found = None
    if isinstance(code, str) and code.isalpha() and code.islower():
        if len(code) == 2:
            found = pycountry.languages.get(alpha_2=code)
        elif len(code) == 3:
            found = pycountry.languages.get(alpha_3=code)
    return _known(found, f"unknown language code {code!r} in setting {setting}: use a lower-case ISO 639-1 code "
                  "such as 'de', 'fr' or 'en' (or an ISO 639-3 code such as 'deu')")


def _known(value, problem: str):
    """`value`, or a ValueError saying `problem` when it is None."""
    if value is None:
        raise ValueError(problem)
    return value


def language_name(code: str, setting: str = "language") -> str:
    """English name of a language code for prompts: de -> German, fra -> French, el -> Greek."""
    if code in READABLE_NAMES:
        return READABLE_NAMES[code]
    return re.sub(r"\s*\(.*\)$", "", language(code, setting).name)


def iso639_1(code: str, setting: str = "language") -> str:
    """The two-letter code of a two- or three-letter code (fra -> fr); ValueError naming an
    unknown code, or a language without a two-letter code, and the setting it came from."""
    found = language(code, setting)
    return _known(getattr(found, "alpha_2", None),
                  f"language code {code!r} in setting {setting} ({found.name}) has no two-letter ISO 639-1 "
                  "code, which the offline language identifier needs; use a language that has one")


def iso639_3(code: str, setting: str = "language") -> str:
    """Three-letter code of a language code, e.g. 'de' -> 'deu' (Tatoeba's column values)."""
    return language(code, setting).alpha_3

"""Language codes: validation, English names and ISO 639-3 codes (for Tatoeba files)."""

from __future__ import annotations

import pycountry


def language(code: str, setting: str = "language"):
    """Look up an ISO 639-1 (two-letter) or 639-3 (three-letter) code; unknown codes raise."""
    found = None
    if isinstance(code, str) and code.isalpha() and code.islower():
        if len(code) == 2:
            found = pycountry.languages.get(alpha_2=code)
        elif len(code) == 3:
            found = pycountry.languages.get(alpha_3=code)
    if found is None:
        raise ValueError(
            f"unknown language code {code!r} in setting {setting}: use a lower-case ISO 639-1 code "
            "such as 'de', 'fr' or 'en' (or an ISO 639-3 code such as 'deu')"
        )
    return found


def language_name(code: str, setting: str = "language") -> str:
    """English name of a language code, e.g. 'de' -> 'German'."""
    return language(code, setting).name


def iso639_3(code: str, setting: str = "language") -> str:
    """Three-letter code of a language code, e.g. 'de' -> 'deu' (Tatoeba's column values)."""
    return language(code, setting).alpha_3

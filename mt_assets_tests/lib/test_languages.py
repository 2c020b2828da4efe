"""lib.data.languages: codes looked up, and unknown ones refused naming the code and the setting."""

from __future__ import annotations

import pytest

from mt_assets.lib.data.languages import iso639_1, iso639_3, language, language_name


@pytest.mark.parametrize("code, two, three, name", [("de", "de", "deu", "German"), ("fra", "fr", "fra", "French"),
                                                    ("el", "el", "ell", "Greek")])
def test_known_codes(code, two, three, name):
    assert (iso639_1(code), iso639_3(code), language_name(code)) == (two, three, name)


@pytest.mark.parametrize("code", ["xx", "DE", "d", "deut", "", None, "d1"])
def test_an_unknown_code_names_itself_and_the_setting(code):
    with pytest.raises(ValueError, match=rf"unknown language code {code!r} in setting experiment\.source_lang: "
                                         "use a lower-case ISO 639-1 code"):
        language(code, "experiment.source_lang")


def test_a_language_without_a_two_letter_code_is_refused_where_one_is_needed():
    assert iso639_3("gsw") == "gsw"  # Swiss German: a three-letter code only
    with pytest.raises(ValueError, match=r"language code 'gsw' in setting langid\.target \(Swiss German\) has no "
                                         "two-letter ISO 639-1 code"):
        iso639_1("gsw", "langid.target")

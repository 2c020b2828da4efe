"""What "the same sentence" means, defined once.

- `normalize_text`: NFC and collapsed whitespace; the form pairs are stored, compared and hashed in.
- `sentence_key`: the normalised text case-folded; two sentences with one key are the same sentence
  (a repeated source in sampling, a test sentence seen in training, a teacher's copy of a few-shot example).
- `near_key`: looser, for near-duplicates: NFKC, case-folded, punctuation, symbols and digits removed.
- `is_blank`: nothing visible.
"""

from __future__ import annotations

import re
import unicodedata


def normalize_text(text: str) -> str:
    """NFC-normalise and collapse runs of whitespace; the form pairs are compared and hashed in."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def sentence_key(text: str) -> str:
    """The exact-duplicate key: the normalised text, case-folded. "Ich bin  müde." and "ich bin müde." share it."""
    return normalize_text(text).casefold()


def near_key(text: str) -> str:
    """The near-duplicate key: NFKC, case-folded, punctuation, symbols and digits removed,
    whitespace collapsed. "Ich bin müde!" and "ich bin MÜDE ." share one key."""
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = "".join(" " if unicodedata.category(ch)[0] in "PSNZC" else ch for ch in text)
    return " ".join(kept.split())


_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
                        "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]")
"""Unicode's default-ignorable characters (zero-width spaces, joiners, marks): a text of only these
and whitespace shows nothing, so it counts as blank."""


def is_blank(text: str) -> bool:
    """Empty, or only whitespace and invisible (default-ignorable) characters."""
    return not text or not _INVISIBLE.sub("", text).strip()

"""URLs that may carry credentials: shown only redacted, sent only in their parts.

A URL such as ``http://user:pass@host/v1?token=...`` holds secrets in its user information and
its query string. ``redact_url`` is the one form in which any URL of this project is logged, put in
metadata or written into an error. ``credential_parts`` splits such a URL for a client, so the
user information travels as an authorization header, never inside a URL a library logs; the query
string cannot leave the request URL, so ``redact_logged_urls`` redacts the URLs an HTTP library logs.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

REDACTED = "***"


def redact_url(url: str) -> str:
    """``url`` with the user information and the query string replaced by ``***``.

    ``http://user:pass@host:8000/v1?token=t`` becomes ``http://***@host:8000/v1?***``; a URL
    without them, or text that is not a URL, is returned unchanged."""
    text = str(url)
    try:
        parts = urlsplit(text)
        hostport = parts.netloc.rpartition("@")[2]
    except ValueError:  # not a URL (an invalid IPv6 host): show nothing of it but the scheme
        return f"{text.split(':', 1)[0]}:{REDACTED}" if ":" in text else REDACTED
    netloc = f"{REDACTED}@{hostport}" if "@" in parts.netloc else parts.netloc
    query = REDACTED if parts.query else ""
    fragment = REDACTED if parts.fragment else ""
    if netloc == parts.netloc and not query and not fragment:
        return text
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def credential_parts(url: str) -> tuple[str, dict[str, str], tuple[str, str] | None]:
    """``(url without user information, query and fragment; query parameters; (user, password)
    or None)``: what a client needs to send the request the full URL describes."""
    parts = urlsplit(url)
    hostport = parts.netloc.rpartition("@")[2]
    userinfo = (unquote(parts.username or ""), unquote(parts.password or "")) if "@" in parts.netloc else None
    bare = urlunsplit((parts.scheme, hostport, parts.path, "", ""))
    return bare, dict(parse_qsl(parts.query, keep_blank_values=True)), userinfo


class _RedactURLs(logging.Filter):
    """Rewrites a log record's URL arguments (text or URL objects holding ``://``) to ``redact_url``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any("://" in str(arg) for arg in record.args):
            record.args = tuple(redact_url(str(arg)) if "://" in str(arg) else arg for arg in record.args)
        return True


def redact_logged_urls(logger_name: str) -> None:
    """Show every URL that logger ``logger_name`` logs (``httpx``: "HTTP Request: POST <url>") redacted."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _RedactURLs) for f in logger.filters):
        logger.addFilter(_RedactURLs())

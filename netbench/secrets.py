"""What counts as a secret, and its redaction: one list of secret header names, used everywhere.

A header is secret when its name is one of `SECRET_HEADERS` or contains one of
`SECRET_NAME_WORDS` (case-insensitive): such headers are redacted in every output and never
sent to another host on a redirect. `redact` removes the run's secret values from any text a
server or libcurl produced before it reaches an output.
"""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "<redacted>"
SECRET_HEADERS = frozenset(
    (
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-api-key",
        "api-key",
        "ocp-apim-subscription-key",
        "x-goog-api-key",
        "x-auth-token",
    )
)
SECRET_NAME_WORDS = ("key", "token", "secret", "auth")
#: secrets shorter than this are not searched for in text: they would redact common words
_MIN_SECRET_CHARS = 4


def is_secret_header(name: str) -> bool:
    lowered = name.strip().lower()
    return lowered in SECRET_HEADERS or any(word in lowered for word in SECRET_NAME_WORDS)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret value replaced by REDACTED."""
    for secret in sorted((s for s in secrets if len(s) >= _MIN_SECRET_CHARS), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text

"""What counts as a secret, and its redaction: one list of secret header names, used everywhere.

A header is secret when its name is one of `SECRET_HEADERS` or contains one of
`SECRET_NAME_WORDS` (case-insensitive): such headers are redacted in every output and never
sent to another host on a redirect. `redact` removes the run's secret values from any text a
server or libcurl produced before it reaches an output.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

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
#: query parameters whose value is secret: any name holding one of these (api-key, access_token, sig, ...)
SECRET_PARAM_WORDS = (*SECRET_NAME_WORDS, "password", "passwd", "pwd", "sig", "credential")
#: secrets shorter than this are not searched for in text: they would redact common words
_MIN_SECRET_CHARS = 4


def is_secret_header(name: str) -> bool:
    lowered = name.strip().lower()
    return lowered in SECRET_HEADERS or any(word in lowered for word in SECRET_NAME_WORDS)


def is_secret_param(name: str) -> bool:
    lowered = name.strip().lower()
    return any(word in lowered for word in SECRET_PARAM_WORDS)


def redact_url(url: str) -> str:
    """The URL with its password and the values of secret-looking query parameters redacted."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, has_password, _ = userinfo.partition(":")
            netloc = f"{user}:{REDACTED}@{hostport}" if has_password else f"{user}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(is_secret_param(name) for name, _ in pairs):
                query = urlencode([(n, REDACTED if is_secret_param(n) else v) for n, v in pairs], safe="<>")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return REDACTED


def url_secrets(url: str) -> tuple[str, ...]:
    """The secret values a URL holds (its password, its secret-looking parameters' values), as
    written and decoded: what a message quoting the URL would show."""
    try:
        parts = urlsplit(url)
        values = [parts.password] if parts.password else []
        values += [v for n, v in parse_qsl(parts.query, keep_blank_values=True) if is_secret_param(n)]
        raw = [v for n, _, v in (p.partition("=") for p in parts.query.split("&")) if is_secret_param(unquote(n))]
    except ValueError:
        return ()
    return tuple(dict.fromkeys(v for v in [*values, *(unquote(v) for v in values), *raw] if v))


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret value replaced by REDACTED."""
    for secret in sorted((s for s in secrets if len(s) >= _MIN_SECRET_CHARS), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text

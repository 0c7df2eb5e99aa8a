"""`RunSpec`: what one run measures, frozen, picklable, and validated in one place."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

from netbench.lengths import LengthsError, parse_lengths
from netbench.secrets import REDACTED, is_secret_header, redact_url, url_secrets

MODES = ("health", "models", "completions", "chat", "get")
STREAMING_MODES = ("completions", "chat")
ARRIVALS = ("poisson", "constant")
BACKENDS = ("local", "ray")
#: libcurl takes timeouts in whole milliseconds, and 0 means "no timeout": the least is 1 ms
MIN_TIMEOUT_S = 0.001
#: bounds that keep every derived number finite (libcurl's ms timeout is a C long; schedules are µs in int64)
MAX_TIMEOUT_S = 30 * 86_400.0
MAX_DURATION_S = 30 * 86_400.0
MIN_RATE = 1e-3
MAX_RATE = 1e7
MAX_SEED = 2**63 - 1
#: characters a URL's path and query keep as they are; the rest is percent-encoded (UTF-8), as a browser does
_URL_SAFE = "/:@!$&'()*+,;=~-._%?[]"


class SpecError(ValueError):
    """Bad input from the user: reported as one line, exit code 2."""


@dataclass(frozen=True)
class RunSpec:
    url: str
    mode: str = "health"
    concurrency: int = 1
    n: int = 32
    warmup: int = 0
    max_tokens: int = 16
    # Reads as an instruction to a chat model and as a text to continue for a raw completion:
    # a small model given "Say hello." as a completion prompt often ends after one token.
    prompt: str = "Write a short story about a lighthouse keeper. Once upon a time,"
    model: str | None = None
    #: ask streams for usage (`stream_options`: include_usage, continuous_usage_stats), which
    #: gives the output token count and the tokens of each event; off for servers that reject it
    stream_usage: bool = True
    # workload (prompts.py, datasets.py, lengths.py): prompt and output lengths in tokens
    #: "N", "A:B" (uniform) or "MEAN,SD" (normal): prompts of that many tokens in the server's tokenizer
    input_tokens: str | None = None
    #: the same for max_tokens, sent with ignore_eos/min_tokens where the server takes them
    output_tokens: str | None = None
    #: the first K tokens of every --input-tokens prompt are the same (the prefix-cached case)
    shared_prefix_tokens: int = 0
    #: a JSONL data set to replay (ShareGPT, OpenAI messages, prompt/max_tokens)
    dataset: str | None = None
    #: a few random words before a fixed prompt (--prompt, a data set's), so a prefix cache cannot shorten TTFT
    unique_prefix: bool = True
    #: the --slo gates goodput counts per request (slo.request_gates)
    goodput: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 60.0
    # open loop (None: closed loop)
    rate: float | None = None
    arrival: str = "poisson"
    duration_s: float | None = None
    max_concurrency: int | None = None
    seed: int = 0
    # transport
    insecure: bool = False
    cacert: str | None = None
    http2: bool = False
    follow_redirects: bool = False
    # execution
    workers: int | None = None
    max_records: int = 100_000
    backend: str = "local"
    ray_address: str | None = None

    def __post_init__(self) -> None:
        _validate(self)
        object.__setattr__(self, "url", normalize_url(self.url))

    @property
    def streaming(self) -> bool:
        return self.mode in STREAMING_MODES

    @property
    def open_loop(self) -> bool:
        return self.rate is not None

    @property
    def in_flight(self) -> int:
        """How many requests may be in flight at once."""
        if self.open_loop:
            return self.max_concurrency or max(self.concurrency, 256)
        return self.concurrency

    def replace(self, **changes: object) -> RunSpec:
        return dataclasses.replace(self, **changes)

    def public_dict(self) -> dict[str, object]:
        """The spec as written to files and reports: secrets removed."""
        out = dataclasses.asdict(self)
        out.pop("api_key")
        out["url"] = redact_url(self.url)
        out["headers"] = [[k, REDACTED if is_secret_header(k) else v] for k, v in self.headers]
        return out

    def secret_values(self) -> tuple[str, ...]:
        """Every secret this run sends (the API key, the URL's password and secret parameters,
        secret headers' values and their tokens), for redacting text that may echo them."""
        values = [self.api_key] if self.api_key else []
        values += url_secrets(self.url)
        for name, value in self.headers:
            if is_secret_header(name):
                values += [value, value.partition(" ")[2]]
        return tuple(v for v in values if v)

    @classmethod
    def from_public_dict(cls, data: dict[str, object]) -> RunSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["headers"] = tuple(tuple(h) for h in kwargs.get("headers", ()))  # type: ignore[union-attr]
        kwargs["goodput"] = tuple(kwargs.get("goodput", ()))  # type: ignore[arg-type]
        return cls(**kwargs)  # type: ignore[arg-type]


def api_key_from_env() -> str | None:
    return os.environ.get("OPENAI_API_KEY") or None


def parse_header(text: str) -> tuple[str, str]:
    """'Name: value' -> (name, value)."""
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not name or any(c in name for c in " \t\r\n") or "\n" in value or "\r" in value:
        raise SpecError(f"unreadable header {text!r}: expected 'Name: value'")
    return name, value.strip()


def parse_duration_s(text: str) -> float:
    """'250ms', '2s', '1.5m', '300us' or a bare number of seconds -> seconds."""
    units = (("us", 1e-6), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0))
    raw = text.strip().lower()
    for suffix, scale in units:
        if raw.endswith(suffix):
            number = raw[: -len(suffix)]
            break
    else:
        number, scale = raw, 1.0
    try:
        value = float(number) * scale
    except ValueError:
        raise SpecError(f"unreadable duration {text!r}: use e.g. 250ms, 2s, 1m") from None
    if value < 0:
        raise SpecError(f"duration {text!r} is negative")
    return value


def normalize_url(url: str) -> str:
    """The URL as a browser sends it: an internationalised host in IDNA (punycode), non-ASCII and
    unsafe characters of the path and query percent-encoded as UTF-8."""
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    try:
        ascii_host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise SpecError(f"--url {redact_url(url)!r}: the host {host!r} is not a valid internationalised domain name") from None
    netloc = parts.netloc
    if ascii_host != host:
        netloc = netloc.replace(host, ascii_host)
    if not netloc.isascii():
        raise SpecError(f"--url {redact_url(url)!r}: the user name or password holds non-ASCII characters; percent-encode them")
    path, query = quote(parts.path, safe=_URL_SAFE), quote(parts.query, safe=_URL_SAFE)
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment and quote(parts.fragment, safe=_URL_SAFE)))


def _finite(name: str, value: float, low: float, high: float, unit: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not low <= value <= high:
        raise SpecError(f"{name} must be a number from {low:g} to {high:g}{unit}, got {value!r}")


def _ascii(name: str, value: str) -> None:
    if not value.isascii() or any(ord(c) < 32 and c != "\t" for c in value):
        raise SpecError(f"{name} holds non-ASCII or control characters: HTTP headers carry ASCII (percent-encode or remove them)")


def _validate(spec: RunSpec) -> None:
    parts = urlsplit(spec.url)
    if parts.scheme not in ("http", "https"):
        raise SpecError(f"--url {redact_url(spec.url)!r}: the scheme must be http or https")
    try:
        port = parts.port
    except ValueError:
        raise SpecError(f"--url {redact_url(spec.url)!r}: the port is not a number in 1-65535") from None
    if not parts.hostname or port == 0:
        raise SpecError(f"--url {redact_url(spec.url)!r}: no host")
    if spec.mode not in MODES:
        raise SpecError(f"--mode {spec.mode!r}: choose one of {', '.join(MODES)}")
    for name, value, low in (
        ("--concurrency", spec.concurrency, 1),
        ("--n", spec.n, 1),
        ("--warmup", spec.warmup, 0),
        ("--max-tokens", spec.max_tokens, 1),
        ("--max-records", spec.max_records, 0),
    ):
        if not isinstance(value, int) or value < low:
            raise SpecError(f"{name} must be an integer >= {low}, got {value!r}")
    _finite("--timeout", spec.timeout_s, MIN_TIMEOUT_S, MAX_TIMEOUT_S, " s (1 ms is the least libcurl can wait)")
    if spec.workers is not None and (not isinstance(spec.workers, int) or spec.workers < 1):
        raise SpecError(f"--workers must be an integer >= 1, got {spec.workers!r}")
    if spec.rate is not None:
        _finite("--rate", spec.rate, MIN_RATE, MAX_RATE, " requests/s")
    if spec.arrival not in ARRIVALS:
        raise SpecError(f"--arrival {spec.arrival!r}: choose one of {', '.join(ARRIVALS)}")
    if spec.duration_s is not None:
        _finite("--duration", spec.duration_s, 1e-3, MAX_DURATION_S, " s")
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int) or not 0 <= spec.seed <= MAX_SEED:
        raise SpecError(f"--seed must be an integer from 0 to {MAX_SEED}, got {spec.seed!r}")
    _validate_workload(spec)
    if spec.max_concurrency is not None and spec.max_concurrency < 1:
        raise SpecError(f"--max-concurrency must be >= 1, got {spec.max_concurrency}")
    if spec.backend not in BACKENDS:
        raise SpecError(f"--backend {spec.backend!r}: choose one of {', '.join(BACKENDS)}")
    for name, value in spec.headers:
        parse_header(f"{name}: {value}")
        _ascii(f"--header {name!r}" if name.isascii() else "a --header name", f"{name}{value}")
    if spec.api_key is not None:
        _ascii("the API key (--api-key or $OPENAI_API_KEY)", spec.api_key)


def _validate_workload(spec: RunSpec) -> None:
    lengths = {}
    for flag, value in (("--input-tokens", spec.input_tokens), ("--output-tokens", spec.output_tokens)):
        if value is not None:
            try:
                lengths[flag] = parse_lengths(value, flag)
            except LengthsError as error:
                raise SpecError(str(error)) from None
    if spec.dataset is not None and spec.input_tokens is not None:
        raise SpecError("--dataset and --input-tokens both choose the prompts: pass one of them")
    shared = spec.shared_prefix_tokens
    if isinstance(shared, bool) or not isinstance(shared, int) or shared < 0:
        raise SpecError(f"--shared-prefix-tokens must be an integer >= 0, got {shared!r}")
    if shared:
        if "--input-tokens" not in lengths:
            raise SpecError("--shared-prefix-tokens needs --input-tokens (it shares the first tokens of built prompts)")
        if shared >= lengths["--input-tokens"].minimum:
            raise SpecError(f"--shared-prefix-tokens {shared} leaves no token of its own to a prompt of "
                            f"{lengths['--input-tokens'].minimum} tokens: use fewer than --input-tokens")

"""How a request ended: success, or one of the failure classes every output counts."""

from __future__ import annotations

import enum


class Outcome(enum.IntEnum):
    OK = 0
    DNS = 1
    REFUSED = 2
    TLS = 3
    TIMEOUT = 4
    RESET = 5
    HTTP_4XX = 6
    HTTP_5XX = 7
    MALFORMED = 8
    #: the server reported an error inside a 200 stream (vLLM's engine failures)
    STREAM_ERROR = 10
    OTHER = 9

    @property
    def key(self) -> str:
        """The name used in counters and outputs, e.g. 'http_5xx'."""
        return self.name.lower()


FAILURES: tuple[Outcome, ...] = tuple(o for o in Outcome if o is not Outcome.OK)

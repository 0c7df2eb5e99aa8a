"""How a run is cut into worker tasks: P = min(in-flight, cores), N split exactly."""

import pytest

from netbench.pacing import split_evenly
from netbench.runner import plan
from netbench.spec import RunSpec, SpecError
from netbench.workloads import RequestSource, api_base, build_request


@pytest.mark.parametrize(("total", "parts"), [(32, 3), (7, 8), (0, 2), (1_000_003, 7)])
def test_split_evenly_loses_nothing(total, parts):
    shares = split_evenly(total, parts)
    assert sum(shares) == total and len(shares) == parts and max(shares) - min(shares) <= 1


@pytest.mark.parametrize(("concurrency", "cores", "workers"), [(1, 2, 1), (4, 2, 2), (8, 16, 8), (3, 2, 2)])
def test_plan_uses_min_of_concurrency_and_cores(concurrency, cores, workers):
    spec = RunSpec(url="http://127.0.0.1:8000", concurrency=concurrency, n=33, warmup=5)
    tasks = plan(spec, RequestSource(build_request(spec)), cores=cores)
    assert len(tasks) == workers
    assert sum(t.slots for t in tasks) == concurrency
    assert sum(t.count for t in tasks) == 33
    assert sum(t.warmup for t in tasks) == 5
    assert all(t.slots >= 1 for t in tasks)


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("http://h:8000", "http://h:8000"),
        ("http://h:8000/", "http://h:8000"),
        ("http://h:8000/v1", "http://h:8000"),
        ("http://h:8000/v1/", "http://h:8000"),
        ("http://gw:8080/llm/v1", "http://gw:8080/llm"),
        ("https://gw/llm", "https://gw/llm"),
        ("http://h:8000/v1/completions", "http://h:8000"),
        ("http://h:8000/v1/chat/completions/", "http://h:8000"),
        ("http://h:8000/v1/models?x=1", "http://h:8000"),
    ],
)
def test_base_url_keeps_the_prefix(url, base):
    assert api_base(url) == base


@pytest.mark.parametrize(
    ("url", "mode", "expected"),
    [
        # a pasted endpoint URL is understood, never doubled
        ("http://h:8000/v1/completions", "completions", "http://h:8000/v1/completions"),
        ("http://h:8000/v1/completions", "chat", "http://h:8000/v1/chat/completions"),
        ("http://h:8000/v1/chat/completions", "health", "http://h:8000/health"),
        # Azure: no /v1, the deployment in the path, api-version in the query, kept everywhere
        ("https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21", "chat",
         "https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21"),
        ("https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21", "models",
         "https://x.openai.azure.com/openai/deployments/d/models?api-version=2024-10-21"),
        ("http://h:8000?tenant=a", "completions", "http://h:8000/v1/completions?tenant=a"),
    ],
)
def test_pasted_endpoints_and_queries(url, mode, expected):
    assert build_request(RunSpec(url=url, mode=mode, model="m")).url == expected


def test_requests_per_mode():
    chat = build_request(RunSpec(url="http://gw:8080/llm/v1", mode="chat", model="m", api_key="sk-secret"))
    assert chat.url == "http://gw:8080/llm/v1/chat/completions" and chat.method == "POST" and chat.streaming
    assert b'"stream": true' in chat.body and b'"messages"' in chat.body
    assert "Authorization: Bearer sk-secret" in chat.headers
    health = build_request(RunSpec(url="http://gw:8080/llm/v1", mode="health"))
    assert health.url == "http://gw:8080/llm/health" and health.body is None and not health.streaming
    get = build_request(RunSpec(url="http://h/some/path?q=1", mode="get"))
    assert get.url == "http://h/some/path?q=1"


def test_public_spec_has_no_secrets():
    spec = RunSpec(url="http://h", api_key="sk-secret", headers=(("Authorization", "Bearer x"), ("X-Trace", "1")))
    public = spec.public_dict()
    assert "sk-secret" not in repr(public) and "Bearer x" not in repr(public) and "sk-secret" not in repr(spec)
    assert RunSpec.from_public_dict(public).headers == (("Authorization", "<redacted>"), ("X-Trace", "1"))


def test_credentials_in_the_url_never_reach_the_public_spec_or_an_error():
    spec = RunSpec(url="http://user:hunter2@h:8000/v1?api-key=sk-q&api-version=1", mode="health")
    public = spec.public_dict()
    assert "hunter2" not in repr(public) and "sk-q" not in repr(public) and "api-version=1" in public["url"]
    with pytest.raises(SpecError) as error:
        RunSpec(url="ftp://user:hunter2@h/?token=sk-q")
    assert "hunter2" not in str(error.value) and "sk-q" not in str(error.value)

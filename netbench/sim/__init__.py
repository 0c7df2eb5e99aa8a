"""`netbench serve`: a simulated small language model behind an OpenAI-compatible, vLLM-like server.

config (SimConfig, the timing model) -> engine (one batch scheduler) -> app (Starlette routes,
SSE streams, metrics) -> server (uvicorn, readiness line, clean signals).
"""

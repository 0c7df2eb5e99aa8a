"""`netbench serve`: a simulated small language model behind an OpenAI-compatible, vLLM-like server.

config (SimConfig: the knobs and the step-cost model) -> engine (vLLM V1's scheduler, with the
prefix cache of prefix_cache) -> app (Starlette routes, SSE streams; wire format in protocol,
tokenizer and EOS in tokens, metrics) -> server (uvicorn, readiness line, clean signals).
capacity computes what a config sustains, from the model alone.
"""

"""netbench perf suite: netbench against wrk, aiohttp and httpx, in one run (`make perf`)."""

"""netbench: where does the latency of an LLM inference endpoint go?"""

__version__ = "0.1.0"

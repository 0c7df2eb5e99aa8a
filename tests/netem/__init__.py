"""A userspace delay line between two network namespaces, for truth tests over a real path.

`line.py` is the entry point (topology, parameters, log format); `emulator.py` is the
forwarding process; `config.py`, `packet.py`, `netns.py` and `log.py` are its parts.
"""

"""`python -m netbench` is the console script."""

from netbench.cli import entry

entry()

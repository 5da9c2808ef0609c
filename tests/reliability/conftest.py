"""The reliability suite: every bad input and injected fault is one test; the counts at the end come from hooks in
tests/conftest.py (the root conftest: pytest-xdist's controller loads only that one)."""

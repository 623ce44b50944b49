"""End-to-end tests with real engines (a package, so that its conftest does not shadow tests/conftest.py)."""

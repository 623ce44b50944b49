"""A runtime-agnostic conformance suite for the OCI runtime-spec v1.3.0 (Linux).

    python -m conformance --runtime CMD [--runtime CMD2 ...]

See conformance/README.md.
"""

"""Operations: the Prometheus series served at /metrics (docs/operations.md)."""

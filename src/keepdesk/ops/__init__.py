"""Operations: the schema's migration state, health and readiness endpoints."""

"""Bridges to other Airflow providers (imported only by them, never by this provider's own modules)."""

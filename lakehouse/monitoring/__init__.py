"""Monitors in the shape of Databricks Lakehouse Monitoring: definitions, profile and drift
metrics tables, incremental refreshes."""

"""The Feast feature store over the gold tables: repository glue, point-in-time joins, online."""

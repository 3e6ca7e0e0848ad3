"""The Feast feature store over the gold tables: repository glue, point-in-time joins, online."""

from lakehouse.features.feast_home import fill_feast_home

# Feast imports this package while it reads feature_store.yaml: the default home goes in there.
fill_feast_home()

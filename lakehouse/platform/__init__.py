"""Settings and profiles, the Spark session, jars, the table catalog and Delta table operations."""

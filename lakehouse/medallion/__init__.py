"""Contracts, bronze, silver, expectations, gold and the pipeline that chains them."""

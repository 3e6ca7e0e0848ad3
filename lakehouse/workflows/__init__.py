"""Lifecycle rules shared by the demo, the jobs and the notebooks."""

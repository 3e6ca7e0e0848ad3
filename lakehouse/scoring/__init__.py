"""Model resolution, batch and streaming scoring, decisions."""

"""The seeded credit-risk world and the faults it can inject."""

"""The worker agent and the container runtime it supervises."""

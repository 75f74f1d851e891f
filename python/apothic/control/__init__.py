"""The control plane: one aiohttp application owning durable state, scheduling and the API."""

"""Capacity providers: where worker agents come from."""

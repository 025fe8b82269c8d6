"""Forge: the appliance core (everything that does work; no UI, no scheduling)."""

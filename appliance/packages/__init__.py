"""Repo packages: the manifest, building them (connected side), validating and ingesting them."""

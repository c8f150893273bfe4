"""Integrations with optional third-party packages."""

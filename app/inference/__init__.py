"""Classify encoded images through one interface, whatever the backend (no Qt here)."""

"""Comfyline package."""

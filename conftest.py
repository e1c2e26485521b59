"""Fixtures shared by every test: real NATS and S3 servers (see comfyline.stack.testing)."""

pytest_plugins = ["comfyline.stack.testing"]

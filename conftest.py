"""Fixtures shared by every test: real NATS and S3 servers (see comfyline.testkit.fixtures)."""

pytest_plugins = ["comfyline.testkit.fixtures"]

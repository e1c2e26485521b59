"""Comfyline's test support, kept out of every service's wheel.

- :mod:`.fixtures`: the pytest plugin (real nats-server and S3 per session, a namespace per test,
  a real ComfyUI where one is installed); the root ``conftest.py`` loads it;
- :mod:`.real_comfyui`: install, start and stop a real ComfyUI from the vendored tarball;
- :mod:`.comfyui`: a ComfyUI protocol client, sample graphs, transcript replay;
- :mod:`.orchestrator`: the orchestrator's neighbours (a scripted worker, enhancer and webhook
  stubs, the service as a child process);
- :mod:`.enhancer`: a fake language-model server for the prompt-enhancer;
- :mod:`.worker`: mixed-model runs for scheduling tests and benchmarks;
- :mod:`.providers`: fake hosted image providers.
"""

"""The package says what it offers, and importing it pulls in no torch."""

from __future__ import annotations

import subprocess
import sys

import comfyline.enhancer as enhancer


def test_every_exported_name_exists() -> None:
    assert enhancer.__all__ == sorted(enhancer.__all__, key=lambda n: (not n.isupper(), n))
    for name in enhancer.__all__:
        assert getattr(enhancer, name) is not None, name


def test_no_torch_and_no_download() -> None:
    code = (
        "import sys, comfyline.enhancer as e; e.clip_tokenizer().count('a cat'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'torch', 'transformers', 'huggingface_hub', 'tokenizers'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"

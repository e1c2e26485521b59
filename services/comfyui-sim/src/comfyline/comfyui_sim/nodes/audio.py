"""Audio nodes: core LoadAudio/SaveAudio* (FLAC, MP3, Opus under `audio`) and the TTS packs
F5-TTS (`F5TTSAudioInputs`) and Chatterbox (`ChatterboxTTS`), which speak a deterministic
voice-like sound whose length follows the text (and F5's `speed`)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from comfyline.comfyui_sim.lazy import lazy
from comfyline.comfyui_sim.nodes.base import (
    BOOLEAN,
    COMBO,
    COMBO_V3,
    FLOAT,
    INT,
    LINK,
    STRING,
    FileLoader,
    Inputs,
    InputTypes,
    Node,
    NodeEnv,
    NodeOutput,
    RunContext,
    hidden_prompt,
)
from comfyline.comfyui_sim.nodes.encode import read_audio, write_audio
from comfyline.comfyui_sim.nodes.media import Audio, speech
from comfyline.comfyui_sim.paths import save_target

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy("numpy")

AUDIO_MODULE = "comfy_extras.nodes_audio"
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
BIT_RATES = {"64k": 64000, "96k": 96000, "128k": 128000, "192k": 192000, "320k": 320000}
CHARS_PER_SECOND = 14.0


def _resampled(audio: Audio, rate: int) -> Audio:
    """Linear resampling; good enough for a simulated voice."""
    if rate == audio.sample_rate or audio.samples == 0:
        return audio
    count = max(1, round(audio.samples * rate / audio.sample_rate))
    positions = np.linspace(0, audio.samples - 1, count, dtype=np.float64)
    source = np.arange(audio.samples, dtype=np.float64)
    wave = np.stack([np.interp(positions, source, channel) for channel in audio.waveform])
    return Audio(wave.astype(np.float32), rate)


class LoadAudio(FileLoader):
    CLASS = "LoadAudio"
    DISPLAY = "Load Audio"
    CATEGORY = "audio"
    MODULE = AUDIO_MODULE
    RETURN_TYPES = ("AUDIO",)
    VALIDATES = ("audio",)
    FILE_INPUT = "audio"

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        files = env.dirs.input_files(("audio", "video"))
        return {"required": {"audio": COMBO_V3(files, audio_upload=True)}}

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        return NodeOutput((read_audio(ctx.dirs.input_file(inputs.as_str("audio"))),))


class SaveAudio(Node):
    """FLAC under `audio/`, one file per batch item, reported under `audio`."""

    CLASS = "SaveAudio"
    DISPLAY = "Save Audio (FLAC)"
    CATEGORY = "audio"
    MODULE = AUDIO_MODULE
    OUTPUT_NODE = True
    FORMAT = "flac"
    KIND = "output"

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "audio": LINK("AUDIO"),
                "filename_prefix": STRING("audio/ComfyUI"),
            },
            "hidden": hidden_prompt(),
        }

    def prefix(self, inputs: Inputs) -> str:
        return inputs.as_str("filename_prefix")

    def encode(self, path: Any, audio: Audio, inputs: Inputs) -> None:
        write_audio(path, audio, "flac", "flac")

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        audio = inputs.get("audio", Audio)
        base = ctx.dirs.output if self.KIND == "output" else ctx.dirs.temp
        target = save_target(self.prefix(inputs), base)
        file = f"{target.filename.replace('%batch_num%', '0')}_{target.counter:05}_.{self.FORMAT}"
        self.encode(target.folder / file, audio, inputs)
        entry = {"filename": file, "subfolder": target.subfolder, "type": self.KIND}
        return NodeOutput((), {"audio": [entry]})


class SaveAudioMP3(SaveAudio):
    CLASS = "SaveAudioMP3"
    DISPLAY = "Save Audio (MP3)"
    FORMAT = "mp3"

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        types = super().input_types(env)
        types["required"]["quality"] = COMBO_V3(["V0", "128k", "320k"], default="V0")
        return types

    def encode(self, path: Any, audio: Audio, inputs: Inputs) -> None:
        quality = inputs.as_str("quality")
        bit_rate = {"V0": 245000, "128k": 128000, "320k": 320000}[quality]
        write_audio(path, audio, "mp3", "libmp3lame", bit_rate)


class SaveAudioOpus(SaveAudio):
    CLASS = "SaveAudioOpus"
    DISPLAY = "Save Audio (Opus)"
    FORMAT = "opus"

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        types = super().input_types(env)
        types["required"]["quality"] = COMBO_V3(list(BIT_RATES), default="128k")
        return types

    def encode(self, path: Any, audio: Audio, inputs: Inputs) -> None:
        rate = audio.sample_rate
        if rate not in OPUS_RATES:
            rate = next((r for r in OPUS_RATES if r > rate), 48000)
        resampled = _resampled(audio, rate)
        write_audio(path, resampled, "opus", "libopus", BIT_RATES[inputs.as_str("quality")], rate)


class PreviewAudio(SaveAudio):
    CLASS = "PreviewAudio"
    DISPLAY = "Preview Audio"
    KIND = "temp"

    def __init__(self) -> None:
        letters = "abcdefghijklmnopqrstupvxyz"
        self.prefix_append = "_temp_" + "".join(random.choice(letters) for _ in range(5))

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {"required": {"audio": LINK("AUDIO")}, "hidden": hidden_prompt()}

    def prefix(self, inputs: Inputs) -> str:
        return "ComfyUI" + self.prefix_append


F5_MODELS = ["F5v1", "F5", "F5-DE", "F5-ES", "F5-FR", "F5-HI", "F5-IT", "F5-JP", "F5-TH", "E2"]


class F5TTSAudioInputs(Node):
    """F5-TTS voice cloning: 32 flow steps, speech length ~ text length x speed."""

    CLASS = "F5TTSAudioInputs"
    DISPLAY = "F5-TTS Audio from inputs"
    CATEGORY = "audio"
    MODULE = "custom_nodes.comfyui-f5-tts"
    RETURN_TYPES = ("AUDIO",)
    STEPS = 32

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        custom = [f"model://{name}" for name in env.models("f5_tts")]
        model_types = ["F5TTS_Base", "F5TTS_v1_Base", "E2TTS_Base", "F5TTS_Small", "E2TTS_Small"]
        return {
            "required": {
                "sample_audio": LINK("AUDIO"),
                "sample_text": STRING("Text of sample_audio"),
                "speech": STRING("This is what I want to say", multiline=True),
                "seed": INT(1, min=-1, step=1, display="number"),
                "model": COMBO(F5_MODELS + custom),
                "vocoder": COMBO(["auto", "vocos", "bigvgan"]),
                "speed": FLOAT(1.0, step=0.01, tooltip=">1.0 slower, <1.0 faster"),
                "model_type": COMBO(model_types, default="F5TTS_Base"),
            }
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        inputs.get("sample_audio", Audio)
        text = inputs.as_str("speech")
        seconds = max(0.6, len(text) / CHARS_PER_SECOND) * max(0.05, inputs.as_float("speed"))
        ctx.steps(self.STEPS)
        return NodeOutput((speech(ctx.signature, seconds),))


class ChatterboxTTS(Node):
    """Chatterbox: one progress tick per second of speech, capped by `max_new_tokens` (25/s)."""

    CLASS = "ChatterboxTTS"
    DISPLAY = "Chatterbox TTS"
    CATEGORY = "audio/generation"
    MODULE = "custom_nodes.ComfyUI-Chatterbox"
    RETURN_TYPES = ("AUDIO",)
    OUTPUT_NODE = True

    @classmethod
    def input_types(cls, env: NodeEnv) -> InputTypes:
        return {
            "required": {
                "model_pack_name": COMBO(env.models("chatterbox")),
                "text": STRING("Hello, this is a test.", multiline=True),
                "max_new_tokens": INT(1000, min=16, max=4000, step=1),
                "flow_cfg_scale": FLOAT(0.7, min=0.0, max=2.0, step=0.05),
                "exaggeration": FLOAT(0.5, min=0.25, max=2.0, step=0.05),
                "temperature": FLOAT(0.8, min=0.05, max=5.0, step=0.05),
                "cfg_weight": FLOAT(0.5, min=0.2, max=1.0, step=0.05),
                "repetition_penalty": FLOAT(1.2, min=1.0, max=2.0, step=0.1),
                "min_p": FLOAT(0.05, min=0.0, max=1.0, step=0.01),
                "top_p": FLOAT(1.0, min=0.0, max=1.0, step=0.01),
                "seed": INT(0, min=0, max=2**32 - 1),
                "use_watermark": BOOLEAN(False),
            },
            "optional": {"audio_prompt": LINK("AUDIO")},
        }

    def run(self, ctx: RunContext, inputs: Inputs) -> NodeOutput:
        text = inputs.as_str("text")
        seconds = min(max(0.6, len(text) / CHARS_PER_SECOND), inputs.as_int("max_new_tokens") / 25)
        ctx.steps(max(1, round(seconds)))
        return NodeOutput((speech(ctx.signature, seconds),), {})


NODES: tuple[type[Node], ...] = (
    LoadAudio,
    SaveAudio,
    SaveAudioMP3,
    SaveAudioOpus,
    PreviewAudio,
    F5TTSAudioInputs,
    ChatterboxTTS,
)

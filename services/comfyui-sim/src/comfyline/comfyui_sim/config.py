"""Every knob of the simulator, in one frozen dataclass, and the command line that fills it.

The simulator plays ComfyUI 0.3.64 by default (the release verified against the transcripts);
any later version string switches on the newer releases' differences (see `Release`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SIMULATOR_NAME = "Comfyline ComfyUI simulator"
SIMULATOR_VERSION = "0.1.0"
DEFAULT_COMFYUI_VERSION = "0.3.64"

#: Model files the simulator pretends are installed, per ComfyUI models folder.
DEFAULT_MODELS: Mapping[str, tuple[str, ...]] = {
    "checkpoints": (
        "RealVisXL_V5.0_fp16.safetensors",
        "RealVisXL_V5.0_Lightning_fp16.safetensors",
        "sd_xl_base_1.0.safetensors",
        "sd_xl_refiner_1.0.safetensors",
        "sdxl_lightning_4step.safetensors",
        "svd_xt_1_1.safetensors",
    ),
    "diffusion_models": (
        "wan2.1_t2v_1.3B_fp16.safetensors",
        "wan2.1_i2v_480p_14B_fp16.safetensors",
        "wan2.2_ti2v_5B_fp16.safetensors",
        "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
        "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
        "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
        "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
    ),
    "text_encoders": ("umt5_xxl_fp8_e4m3fn_scaled.safetensors",),
    "vae": ("wan_2.1_vae.safetensors", "wan2.2_vae.safetensors", "sdxl_vae.safetensors"),
    "clip_vision": ("clip_vision_h.safetensors",),
    "loras": (
        "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
        "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors",
        "sdxl_lightning_4step_lora.safetensors",
    ),
    "sonic": ("unet.pth", "audio2token.pth", "audio2bucket.pth", "yoloface_v5m.pt"),
    "chatterbox": ("resembleai_default_voice",),
    "f5_tts": (),
}


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


@dataclass(frozen=True)
class Release:
    """The ComfyUI release being played, and which behaviours follow from it.

    0.3.64 (and older) has no `/api/jobs`, no `Sec-Fetch-Site` check, reports an unknown
    class_type as `invalid_prompt`, and takes any string as `prompt_id`. Newer releases differ on
    exactly those points (docs/comfyui-protocol.md, last section).
    """

    version: str = DEFAULT_COMFYUI_VERSION

    @property
    def is_newer(self) -> bool:
        return _version_tuple(self.version) > _version_tuple("0.3.64")

    @property
    def has_jobs_api(self) -> bool:
        return self.is_newer

    @property
    def checks_sec_fetch_site(self) -> bool:
        return self.is_newer

    @property
    def validates_prompt_id(self) -> bool:
        return self.is_newer

    @property
    def missing_node_error_type(self) -> str:
        return "missing_node_type" if self.is_newer else "invalid_prompt"


@dataclass(frozen=True)
class SimConfig:
    """All settings of one simulator instance; built once (CLI or tests) and passed down."""

    host: str = "127.0.0.1"
    port: int = 8188
    data_dir: Path | None = None
    release: Release = field(default_factory=Release)
    startup_delay: float = 0.0
    step_time: float = 0.0
    node_delays: Mapping[str, float] = field(default_factory=dict)
    history_delay: float = 0.005
    models: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    disabled_nodes: frozenset[str] = frozenset()
    fail_nodes: frozenset[str] = frozenset()
    drop_ws_nodes: frozenset[str] = frozenset()
    die_nodes: frozenset[str] = frozenset()
    view_delay: float = 0.0
    model_load_time: float = 0.0
    png_compress_level: int | None = None
    preview_method: str = "none"
    max_upload_size_mb: float = 100.0
    log_level: str = "INFO"

    @property
    def max_upload_size(self) -> int:
        return round(self.max_upload_size_mb * 1024 * 1024)

    def node_delay(self, class_type: str) -> float:
        return self.node_delays.get(class_type, 0.0)


def _pairs(values: Sequence[str], what: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in values:
        name, sep, seconds = item.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"{what} wants CLASS=SECONDS, got {item!r}")
        out[name] = float(seconds)
    return out


def _models(args: argparse.Namespace) -> dict[str, tuple[str, ...]]:
    models: dict[str, list[str]] = {}
    if not args.no_default_models:
        models = {folder: list(names) for folder, names in DEFAULT_MODELS.items()}
    if args.models_json:
        loaded = json.loads(Path(args.models_json).read_text())
        if not isinstance(loaded, dict):
            raise argparse.ArgumentTypeError("--models-json must hold an object folder -> [names]")
        for folder, names in loaded.items():
            models[str(folder)] = [str(name) for name in names]
    for entry in args.model:
        folder, sep, name = entry.partition("/")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"--model wants FOLDER/FILE, got {entry!r}")
        models.setdefault(folder, [])
        if name not in models[folder]:
            models[folder].append(name)
    return {folder: tuple(names) for folder, names in models.items()}


def build_parser() -> argparse.ArgumentParser:
    """The command line; `--help` lists every knob."""
    p = argparse.ArgumentParser(
        prog="comfyui-sim",
        description=(
            f"{SIMULATOR_NAME}: a protocol-faithful stand-in for a ComfyUI server "
            "(it is NOT ComfyUI and runs no models)."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8188, help="port to listen on")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding input/, output/ and temp/ (default: a fresh temporary folder)",
    )
    p.add_argument(
        "--comfyui-version",
        default=DEFAULT_COMFYUI_VERSION,
        help="ComfyUI release to play; anything above 0.3.64 adds the newer releases' "
        "differences (/api/jobs, Sec-Fetch-Site, missing_node_type, invalid_prompt_id)",
    )
    p.add_argument(
        "--startup-delay", type=float, default=0.0, help="seconds to wait before listening"
    )
    p.add_argument(
        "--step-time",
        type=float,
        default=0.0,
        help="seconds per sampler step (KSampler, SONICSampler, TTS, LatentSync...)",
    )
    p.add_argument(
        "--node-delay",
        action="append",
        default=[],
        metavar="CLASS=SECONDS",
        help="extra run time for every node of a class (repeatable), e.g. ImageBlur=0.2",
    )
    p.add_argument(
        "--history-delay",
        type=float,
        default=0.005,
        help="seconds between execution_success and the /history entry being written "
        "(the real server's race); 0 disables it",
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="FOLDER/FILE",
        help="add an installed model file, e.g. checkpoints/my.safetensors (repeatable)",
    )
    p.add_argument(
        "--models-json",
        default=None,
        help="JSON file {folder: [files]} replacing those folders' model lists",
    )
    p.add_argument(
        "--no-default-models", action="store_true", help="start from no installed models"
    )
    p.add_argument(
        "--disable-node",
        action="append",
        default=[],
        metavar="CLASS",
        help="remove a node class, as if its custom node pack were missing (repeatable)",
    )
    p.add_argument(
        "--fail-node",
        action="append",
        default=[],
        metavar="CLASS",
        help="fault: every node of this class raises at run time (repeatable)",
    )
    p.add_argument(
        "--drop-ws-at",
        action="append",
        default=[],
        metavar="CLASS",
        help="fault: abort every WebSocket connection when a node of this class starts",
    )
    p.add_argument(
        "--die-at",
        action="append",
        default=[],
        metavar="CLASS",
        help="fault: the process exits at once when a node of this class starts",
    )
    p.add_argument(
        "--view-delay", type=float, default=0.0, help="fault: seconds before /view answers"
    )
    p.add_argument(
        "--model-load-time",
        type=float,
        default=0.0,
        help="seconds a loader node takes when its model file is not the one of its folder "
        "loaded last (a checkpoint swap); a loaded model costs nothing",
    )
    p.add_argument(
        "--png-compress-level",
        type=int,
        default=None,
        choices=range(10),
        metavar="0-9",
        help="zlib level for saved PNGs (default: 4 like SaveImage, 1 for previews); "
        "0 makes big files",
    )
    p.add_argument(
        "--preview-method",
        choices=("none", "auto"),
        default="none",
        help="'auto' makes samplers send a JPEG preview with each progress step",
    )
    p.add_argument(
        "--max-upload-size",
        type=float,
        default=100.0,
        help="largest request body in MB (reported in /features)",
    )
    p.add_argument("--log-level", default="INFO", help="logging level")
    return p


def config_from_args(argv: Sequence[str] | None = None) -> SimConfig:
    """Parse a command line into a `SimConfig`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        delays = _pairs(args.node_delay, "--node-delay")
        models = _models(args)
    except (argparse.ArgumentTypeError, ValueError, OSError) as exc:
        parser.error(str(exc))
    return SimConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        release=Release(args.comfyui_version),
        startup_delay=args.startup_delay,
        step_time=args.step_time,
        node_delays=delays,
        history_delay=args.history_delay,
        models=models,
        disabled_nodes=frozenset(args.disable_node),
        fail_nodes=frozenset(args.fail_node),
        drop_ws_nodes=frozenset(args.drop_ws_at),
        die_nodes=frozenset(args.die_at),
        view_delay=args.view_delay,
        model_load_time=args.model_load_time,
        png_compress_level=args.png_compress_level,
        preview_method=args.preview_method,
        max_upload_size_mb=args.max_upload_size,
        log_level=args.log_level,
    )

"""The catalogue: every model Comfyline can run, loaded from the JSON files beside this module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from comfyline.contracts import ComfylineError, ErrorCode, ModelTemplate


class UnknownModel(ComfylineError):
    """No model of that name (or version) in the catalogue."""

    code = ErrorCode.UNKNOWN_MODEL


class Catalogue:
    """An immutable set of model templates, by name (the latest version of each)."""

    def __init__(self, templates: list[ModelTemplate]) -> None:
        self._latest: dict[str, ModelTemplate] = {}
        self._versions: dict[tuple[str, int], ModelTemplate] = {}
        self._reset(templates)

    def _reset(self, templates: list[ModelTemplate]) -> None:
        """Hold exactly ``templates`` (a live catalogue swaps its contents this way)."""
        latest: dict[str, ModelTemplate] = {}
        versions: dict[tuple[str, int], ModelTemplate] = {}
        for template in sorted(templates, key=lambda t: (t.name, t.version)):
            latest[template.name] = template
            versions[(template.name, template.version)] = template
        self._latest, self._versions = latest, versions

    def templates(self) -> list[ModelTemplate]:
        """Every version of every model."""
        return list(self._versions.values())

    @classmethod
    def builtin(cls) -> Catalogue:
        """The templates shipped in ``comfyline/catalogue/models/*.json``."""
        folder = resources.files(__package__).joinpath("models")
        templates = [
            ModelTemplate.model_validate_json(entry.read_text())
            for entry in sorted(folder.iterdir(), key=lambda e: e.name)
            if entry.name.endswith(".json")
        ]
        return cls(templates)

    @classmethod
    def from_dir(cls, path: Path) -> Catalogue:
        """Templates from a folder of JSON files (a deployment's own catalogue)."""
        return cls(
            [ModelTemplate.model_validate_json(p.read_text()) for p in sorted(path.glob("*.json"))]
        )

    def get(self, name: str, version: int | None = None) -> ModelTemplate:
        """One model, its latest version unless ``version`` is given."""
        template = (
            self._latest.get(name) if version is None else self._versions.get((name, version))
        )
        if template is None:
            raise UnknownModel(
                f"unknown model {name!r}" + (f" version {version}" if version else ""),
                details={
                    "model": name,
                    "available": sorted(n for n, t in self._latest.items() if t.kind != "workflow"),
                },
            )
        return template

    def __contains__(self, name: object) -> bool:
        return name in self._latest

    def __iter__(self) -> Iterator[ModelTemplate]:
        return iter(self._latest[name] for name in sorted(self._latest))

    def __len__(self) -> int:
        return len(self._latest)

    def names(self) -> list[str]:
        """Every model name, sorted."""
        return sorted(self._latest)

    def to_json(self) -> str:
        """Every version of every template, as one JSON document (for the ``models`` bucket)."""
        return json.dumps(
            [t.model_dump(mode="json") for _, t in sorted(self._versions.items())], sort_keys=True
        )

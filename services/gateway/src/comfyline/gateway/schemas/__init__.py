"""The public API's models: separate ones for what comes in and what goes out.

Incoming models refuse unknown fields; outgoing ones are what the OpenAPI document promises.
Every model carries an example, so ``/docs`` shows one for every route.
"""

from .account import (
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyPublic,
    UsageItem,
    UsagePublic,
    WebhookSecretCreated,
    WebhookSecretInfo,
)
from .assets import AssetList, AssetPublic, SignedLink, SignRequest
from .catalogue import (
    Availability,
    Health,
    ModelLimits,
    ModelList,
    ModelPublic,
    Readiness,
    StatusPublic,
    WorkerPublic,
)
from .jobs import (
    JobCreate,
    JobEventPublic,
    JobList,
    JobPublic,
    Links,
    OutputPublic,
    PreviewPublic,
    WebhookCreate,
    WsMessage,
)
from .prompts import EnhanceCreate, EnhancePublic

__all__ = [
    "AssetList",
    "AssetPublic",
    "Availability",
    "EnhanceCreate",
    "EnhancePublic",
    "Health",
    "JobCreate",
    "JobEventPublic",
    "JobList",
    "JobPublic",
    "KeyCreate",
    "KeyCreated",
    "KeyList",
    "KeyPublic",
    "Links",
    "ModelLimits",
    "ModelList",
    "ModelPublic",
    "OutputPublic",
    "PreviewPublic",
    "Readiness",
    "SignRequest",
    "SignedLink",
    "StatusPublic",
    "UsageItem",
    "UsagePublic",
    "WebhookCreate",
    "WebhookSecretCreated",
    "WebhookSecretInfo",
    "WorkerPublic",
    "WsMessage",
]

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
from .admin import (
    DeadLetterList,
    DeadLetterPublic,
    ModelPausePublic,
    OrderCreate,
    ServerAdmin,
    WorkerAdmin,
    WorkerList,
)
from .assets import AssetList, AssetPublic, SignedLink, SignRequest
from .batches import BatchCounts, BatchCreate, BatchPublic
from .catalogue import (
    Availability,
    Health,
    ModelLimits,
    ModelList,
    ModelPublic,
    ModelPublish,
    ProviderPublic,
    Readiness,
    StatusPublic,
    StepTemplatePublic,
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
    StepPublic,
    WebhookCreate,
    WsMessage,
)
from .prompts import EnhanceCreate, EnhancePublic

__all__ = [
    "AssetList",
    "AssetPublic",
    "Availability",
    "BatchCounts",
    "BatchCreate",
    "BatchPublic",
    "DeadLetterList",
    "DeadLetterPublic",
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
    "ModelPausePublic",
    "ModelPublic",
    "ModelPublish",
    "OrderCreate",
    "OutputPublic",
    "PreviewPublic",
    "ProviderPublic",
    "Readiness",
    "ServerAdmin",
    "SignRequest",
    "SignedLink",
    "StatusPublic",
    "StepPublic",
    "StepTemplatePublic",
    "UsageItem",
    "UsagePublic",
    "WebhookCreate",
    "WebhookSecretCreated",
    "WebhookSecretInfo",
    "WorkerAdmin",
    "WorkerList",
    "WorkerPublic",
    "WsMessage",
]

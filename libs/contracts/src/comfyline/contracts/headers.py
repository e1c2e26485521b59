"""Header names every message carries."""

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
MSG_ID = "Nats-Msg-Id"
CONTENT_TYPE = "Content-Type"
JSON = "application/json"
MESSAGE_TYPE = "Comfyline-Message"

"""OpenTelemetry spans and metrics, cost, capture and replay."""

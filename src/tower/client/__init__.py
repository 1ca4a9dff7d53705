"""Typed HTTP client of the Tower API, shared by the CLI, the SDK, MCP and the runner."""

from tower.client._http import ApiError, ConnectionFailed, HttpClient, TlsFailed

__all__ = ["ApiError", "ConnectionFailed", "HttpClient", "TlsFailed"]

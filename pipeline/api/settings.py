"""What `hataori api` is allowed to do, checked before anything heavy is loaded (torch-free): the
limits on requests, and where it may listen (anything but loopback needs an API key)."""

from __future__ import annotations

import ipaddress
import socket

from pydantic import BaseModel, Field


class APISettings(BaseModel):
    """Limits and access: every request is bounded before anything is allocated for it."""

    api_key: str | None = Field(None, description="Bearer token every /v1 request must carry; None: open.")
    max_batch: int = Field(8, ge=1, le=256, description="Sequences decoded together (rows of the KV cache).")
    max_queue: int = Field(64, ge=0, le=100_000, description="Sequences waiting for a row; beyond: 503.")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="Largest request body; beyond: 413.")
    max_tokens: int | None = Field(None, ge=1, description="Largest max_tokens (default: the context length).")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_exposure(host: str, api_key: str | None) -> None:
    """ValueError when the server would be reachable from other machines without a key."""
    if not is_loopback(host) and not api_key:
        raise ValueError(f"binding {host} lets other machines use the model: give --api-key (or HATAORI_API_KEY), "
                         "or bind 127.0.0.1 and reach it through a reverse proxy or `ssh -L`")


def check_port(host: str, port: int) -> None:
    """ValueError when (host, port) cannot be listened on (in use, not an address of this machine)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as e:
        raise ValueError(f"cannot listen on {host} port {port}: {e.strerror or e}") from None

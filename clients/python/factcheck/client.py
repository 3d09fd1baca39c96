"""Connecting with a token, finding quotes, paging and watching."""

from __future__ import annotations

import os
from typing import Callable, Iterator, Optional

import grpc

from .v1 import factcheck_pb2 as pb
from .v1 import factcheck_pb2_grpc as pb_grpc

DEFAULT_SERVER = "http://127.0.0.1:50051"


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call."""

    def __init__(self, token: str):
        self._metadata = ("authorization", f"Bearer {token}")

    def _with_token(self, details):
        metadata = list(details.metadata or []) + [self._metadata]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)


class _Details(grpc.ClientCallDetails):
    def __init__(self, d, metadata):
        self.method = d.method
        self.timeout = d.timeout
        self.metadata = metadata
        self.credentials = d.credentials
        self.wait_for_ready = getattr(d, "wait_for_ready", None)
        self.compression = getattr(d, "compression", None)


class Client:
    """A connection to a factcheck server.

    `server` defaults to $FACTCHECK_SERVER (else http://127.0.0.1:50051);
    without a scheme it is http, or https when `ca_cert` is given. `token`
    defaults to $FACTCHECK_TOKEN.
    """

    def __init__(self, server: Optional[str] = None, token: Optional[str] = None, ca_cert: Optional[str] = None):
        server = server or os.environ.get("FACTCHECK_SERVER") or DEFAULT_SERVER
        token = token or os.environ.get("FACTCHECK_TOKEN")
        if not token:
            raise ValueError("no token: pass token= or set FACTCHECK_TOKEN")
        ca_cert = ca_cert or os.environ.get("FACTCHECK_CA_CERT")
        if "://" not in server:
            server = ("https://" if ca_cert else "http://") + server
        scheme, target = server.split("://", 1)
        target = target.rstrip("/")
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        if scheme == "https":
            root = open(ca_cert, "rb").read() if ca_cert else None
            channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root), options)
        elif scheme == "http":
            channel = grpc.insecure_channel(target, options)
        else:
            raise ValueError(f"server {server!r}: the scheme must be http or https")
        self.channel = grpc.intercept_channel(channel, _Bearer(token))
        self.stub = pb_grpc.FactCheckServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def quote_spans(text: str, quote: str) -> list[tuple[int, int]]:
    """Every non-overlapping occurrence of `quote` in `text`, as `[start,
    end)` code-point spans (what the server stores)."""
    if not quote:
        raise ValueError("the quote is empty")
    spans, at = [], text.find(quote)
    while at >= 0:
        spans.append((at, at + len(quote)))
        at = text.find(quote, at + len(quote))
    return spans


def quote_span(text: str, quote: str, occurrence: Optional[int] = None) -> tuple[int, int]:
    """The span of `quote` in `text`, in code points. `occurrence` (from 1)
    picks one of several; without it the quote must occur exactly once."""
    spans = quote_spans(text, quote)
    if not spans:
        raise ValueError(f"{quote!r} does not occur in the text")
    if occurrence is None:
        if len(spans) > 1:
            raise ValueError(f"{quote!r} occurs {len(spans)} times: pick one with occurrence=1..{len(spans)}")
        return spans[0]
    if not 1 <= occurrence <= len(spans):
        raise ValueError(f"{quote!r} occurs {len(spans)} times, not {occurrence}")
    return spans[occurrence - 1]


def paginate(call: Callable, request, items: str) -> Iterator:
    """Every item of a paged list: `paginate(stub.ListAnnotations,
    pb.ListAnnotationsRequest(parent=...), "annotations")`."""
    request = type(request).FromString(request.SerializeToString())
    while True:
        page = call(request)
        yield from getattr(page, items)
        if not page.next_page_token:
            return
        request.page_token = page.next_page_token


def watch(stub, parent: str, start_revision: int = 0, retries: int = 5) -> Iterator:
    """Yields each EVENTS message of `WatchAnnotations`, resuming after a
    dropped stream from the last revision received whole + 1 (a revision
    whose events come in parts has `more` set on all but its last)."""
    next_revision = start_revision
    failures = 0
    while True:
        try:
            stream = stub.WatchAnnotations(pb.WatchAnnotationsRequest(parent=parent, start_revision=next_revision))
            for msg in stream:
                failures = 0
                if msg.kind == pb.WatchAnnotationsResponse.CREATED and next_revision == 0:
                    next_revision = msg.revision + 1
                elif msg.kind == pb.WatchAnnotationsResponse.EVENTS:
                    if not msg.more:
                        next_revision = msg.revision + 1
                    yield msg
            return
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or failures >= retries:
                raise
            failures += 1

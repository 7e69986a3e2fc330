"""What the server refuses before Gradio reads a request: bodies over a size, and a visitor's events past a number.

On a public Space one client could otherwise fill the shared waiting line (64 places) with evaluations whose
results it never reads, so every other visitor got "Queue is full", or post 20 MB texts until the app held 7 GB.
`RequestGuard` is ASGI middleware in front of Gradio's routes (`launch(app_kwargs={"middleware": ...})`).
"""

from __future__ import annotations

import json
import os
import time

from ..errors import LlmftError
from ..files import env_number

MAX_BODY = int(float(os.environ.get("LLMFT_MAX_BODY_MB", "4")) * 2**20)
"""A request body (not a file upload, which Gradio caps at MAX_UPLOAD): Compare's two 200,000-character fields fit
in well under it, whatever their escaping."""
MAX_MODEL_EVENTS = int(os.environ.get("LLMFT_MAX_MODEL_EVENTS_PER_VISITOR", "2"))
"""A visitor's model-heavy events (Compare, Evaluate, previews, leaderboards) waiting or running at once."""
MAX_EVENTS = int(os.environ.get("LLMFT_MAX_EVENTS_PER_VISITOR", "16"))
"""A visitor's events of any kind waiting or running at once (a fresh page sends six at once)."""
MODEL_WORK = "model"
"""The concurrency group of every model-heavy event: one limit for all of them, not one per event."""


def max_request_seconds(space: bool) -> float | None:
    """How long one model-heavy request may run: on a Space `LLMFT_MAX_REQUEST_MINUTES` (30; 0: no limit), locally
    no limit (the owner's own machine)."""
    minutes = env_number("LLMFT_MAX_REQUEST_MINUTES", 30) if space else 0
    return minutes * 60 or None


def request_watch(space: bool):
    """A check for a long handler to call between batches (an evaluation's progress): it raises `LlmftError` once the
    page that asked has gone (Gradio marks the event dead when its stream closes: an abandoned request) or the
    request ran past `max_request_seconds` (a stalled one), so neither holds the model for others. Called in the
    handler's thread, which carries Gradio's event context."""
    from gradio.context import LocalContext

    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    limit = max_request_seconds(space)
    deadline = time.monotonic() + limit if limit else None

    def check() -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise LlmftError(f"stopped: this request ran past this server's limit of {limit / 60:g} minutes")
        if blocks is not None and event_id is not None and _abandoned(blocks, event_id):
            raise LlmftError("stopped: the page that asked for this has closed")

    return check


def _abandoned(blocks, event_id: str) -> bool:
    """Whether Gradio has marked the running event `event_id` dead (its client disconnected)."""
    queue = getattr(blocks, "_queue", None)
    for job in getattr(queue, "active_jobs", None) or []:
        for event in job or []:
            if getattr(event, "_id", None) == event_id:
                return not getattr(event, "alive", True)
    return False


def visitor_key(headers, client) -> str:
    """Who is asking, for counting: the client address (on a Space, the first X-Forwarded-For address, which the
    Hub's proxy sets: every visitor reaches the app through it)."""
    forwarded = headers.get("x-forwarded-for", "")
    if forwarded:
        return forwarded.split(",")[0].strip()
    return client[0] if client else "?"


class RequestGuard:
    """Refuses, in one line and before Gradio parses anything: a POST body over `MAX_BODY` (413), and, where
    `per_visitor` (a public Space: locally the one owner's parallel requests are theirs to make), a queue join
    (`/queue/join`, `/call/<api>`) from a visitor who already has `MAX_MODEL_EVENTS` model-heavy or `MAX_EVENTS`
    events of any kind waiting or running (429)."""

    def __init__(self, app, blocks, per_visitor: bool, max_body: int = MAX_BODY, model_events: int = MAX_MODEL_EVENTS):
        self.app, self.blocks, self.per_visitor = app, blocks, per_visitor
        self.max_body, self.model_events = max_body, model_events

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or path.endswith("/upload"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if int(headers.get("content-length") or 0) > self.max_body:
            return await _refuse(send, 413, f"the request is over the {self.max_body // 2**20} MB limit")
        body, more = b"", True
        while more:  # read in full, counting: a body without a length is cut off at the limit too
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_body:
                return await _refuse(send, 413, f"the request is over the {self.max_body // 2**20} MB limit")
            more = message.get("more_body", False)
        if self.per_visitor and (path.endswith("/queue/join") or "/call/" in path):
            refusal = self._over_limit(path, body, visitor_key(headers, scope.get("client")))
            if refusal:
                return await _refuse(send, 429, refusal)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def _over_limit(self, path: str, body: bytes, visitor: str) -> str | None:
        fn = self._fn(path, body)
        events = [e for e in self._pending() if visitor_key(e.request.headers, _client(e.request)) == visitor]
        if len(events) >= MAX_EVENTS:
            return f"you have {len(events)} requests waiting or running, the most one visitor may: wait for them"
        if fn is not None and fn.concurrency_id == MODEL_WORK:
            heavy = sum(e.fn.concurrency_id == MODEL_WORK for e in events)
            if heavy >= self.model_events:
                return (
                    f"you have {heavy} model requests (Compare, Evaluate, previews) waiting or running, the most "
                    f"one visitor may have at once is {self.model_events}: wait for them to finish"
                )
        return None

    def _fn(self, path: str, body: bytes):
        """The event a join is for (None when it cannot be told: Gradio answers it)."""
        fns = self.blocks.fns
        if "/call/" in path:
            name = path.rstrip("/").rsplit("/", 1)[-1]
            return next((f for f in fns.values() if f.api_name == name), None)
        try:
            index = json.loads(body).get("fn_index")
        except (ValueError, AttributeError):
            return None
        return fns.get(index) if isinstance(index, int) else None

    def _pending(self) -> list:
        """Events waiting in the line or running now."""
        queue = self.blocks._queue
        waiting = [e for q in queue.event_queue_per_concurrency_id.values() for e in q.queue]
        running = [e for job in queue.active_jobs if job for e in job]
        return [e for e in waiting + running if getattr(e, "request", None) is not None]


def _client(request):
    client = getattr(request, "client", None)
    return (client.host, client.port) if client else None


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message, "detail": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})

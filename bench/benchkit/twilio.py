"""A fake Twilio Messages API (2010-04-01) for the SMS drill, on 127.0.0.1, with its faults.

It answers as Twilio's published API does where careflow depends on it:

- ``POST /2010-04-01/Accounts/{sid}/Messages.json`` (form-encoded ``To``, ``From``, ``Body``,
  ``StatusCallback``), with HTTP basic auth of the account SID and auth token, creates a
  message and answers 201 with Twilio's message JSON (``status: queued``). A wrong account
  or password is a 401 (code 20003); a missing ``To`` or ``Body``, or a ``To`` not in E.164,
  a 400 with Twilio's error code.
- ``GET …/Messages.json`` lists the account's messages newest first, filtered by ``To``,
  ``From`` and ``DateSent`` (``DateSent``, ``DateSent>``, ``DateSent<``; a day or a time),
  ``PageSize`` at a time (``Page`` and ``next_page_uri`` to page on).
- A message is handed to the carrier at once (``sent``, ``date_sent`` set) and delivered
  ``delivered_after`` seconds later. Each step is POSTed to the message's
  ``StatusCallback``, form-encoded as Twilio sends it (``MessageSid``, ``MessageStatus``,
  ``AccountSid``, ``From``, ``To``, ``SmsSid``, ``SmsStatus``, ``ApiVersion``) and signed
  as Twilio signs it: ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, URL followed by
  each parameter's name and value, sorted by name)). Like Twilio, the fake does not send a
  callback again when careflow's answer is not a 2xx; it counts them.

The fault: the first create request to a number in ``faulty`` makes the message all the
same, and then either holds the answer for ``stall_seconds`` (longer than careflow waits
for Twilio: the answer is lost) or closes the connection without answering, alternately.
Every count the drill reports is kept here: creates per careflow message id (named in the
``StatusCallback`` query), list requests, faults, callbacks and their answers.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import heapq
import hmac
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, date, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

ACCOUNT_SID = "AC" + "d1" * 16
AUTH_TOKEN = "drill-auth-token"
FROM_NUMBER = "+447700900001"
_E164 = re.compile(r"\+[1-9]\d{6,14}")
_PATH = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Messages\.json")


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """What Twilio puts in ``X-Twilio-Signature`` for a request to ``url`` with ``params``."""
    payload = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _expected_auth() -> str:
    return "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()


class FakeTwilio:
    def __init__(
        self,
        *,
        faulty: set[str],
        stall_seconds: float,
        delivered_after: float = 2.0,
        callback_senders: int = 4,
    ) -> None:
        self.faulty = set(faulty)
        self.stall_seconds = stall_seconds
        self.delivered_after = delivered_after
        self.lock = threading.Lock()
        self.messages: list[dict[str, Any]] = []  # Twilio's representation, oldest first
        self.seen_to: set[str] = set()
        self.creates: Counter[str] = Counter()  # careflow message id -> messages created
        self.create_requests = 0
        self.list_requests = 0
        self.faults: Counter[str] = Counter()  # "stalled" / "dropped"
        self.refused: Counter[int] = Counter()  # 4xx answers to create requests
        self.callbacks_sent: Counter[str] = Counter()  # by status
        self.callback_answers: Counter[Any] = Counter()  # HTTP status or exception name
        self._stop = threading.Event()
        self._due: list[tuple[float, int, str, str]] = []  # (when, seq, sid, status)
        self._seq = 0
        self._cond = threading.Condition()
        self._outbox: list[tuple[str, dict[str, str]]] = []
        self._outbox_cond = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                match = _PATH.fullmatch(urlsplit(self.path).path)
                length = int(self.headers.get("content-length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if match is None:
                    self._send(404, _error(20404, "The requested resource was not found", 404))
                    return
                if self.headers.get("authorization") != _expected_auth():
                    self._send(401, _error(20003, "Authenticate", 401))
                    return
                status, body, fault = fake._create(match["account"], form)
                if fault == "dropped":
                    # Created, then the connection is lost before any answer.
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "stalled":
                    fake._stop.wait(fake.stall_seconds)
                    self.close_connection = True
                self._send(status, body)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                match = _PATH.fullmatch(url.path)
                if match is None:
                    self._send(404, _error(20404, "The requested resource was not found", 404))
                    return
                if self.headers.get("authorization") != _expected_auth():
                    self._send(401, _error(20003, "Authenticate", 401))
                    return
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                self._send(200, fake._list(match["account"], url.path, query))

            def _send(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client stopped waiting: its answer is lost, as on the network

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.threads = [threading.Thread(target=self.server.serve_forever, daemon=True)]
        self.threads.append(threading.Thread(target=self._scheduler, daemon=True))
        self.threads += [
            threading.Thread(target=self._sender, daemon=True) for _ in range(callback_senders)
        ]

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        with self._outbox_cond:
            self._outbox_cond.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # --- the API ----------------------------------------------------------------------------

    def _create(self, account: str, form: dict[str, str]) -> tuple[int, dict[str, Any], str]:
        with self.lock:
            self.create_requests += 1
            to, body = form.get("To"), form.get("Body")
            if account != ACCOUNT_SID:
                self.refused[401] += 1
                return 401, _error(20003, "Authenticate", 401), ""
            if not to or not body or not _E164.fullmatch(to):
                self.refused[400] += 1
                code = 21604 if not to else 21602 if not body else 21211
                return 400, _error(code, "invalid message", 400), ""
            fault = ""
            if to in self.faulty and to not in self.seen_to:
                fault = "stalled" if sum(self.faults.values()) % 2 == 0 else "dropped"
                self.faults[fault] += 1
            self.seen_to.add(to)
            now = datetime.now(UTC)
            sid = "SM" + uuid.uuid4().hex
            callback = form.get("StatusCallback")
            message = {
                "account_sid": account,
                "api_version": "2010-04-01",
                "body": body,
                "date_created": format_datetime(now, usegmt=True),
                "date_sent": None,
                "date_updated": format_datetime(now, usegmt=True),
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": form.get("From"),
                "messaging_service_sid": None,
                "num_media": "0",
                "num_segments": "1",
                "price": None,
                "price_unit": "USD",
                "sid": sid,
                "status": "queued",
                "subresource_uris": {
                    "media": f"/2010-04-01/Accounts/{account}/Messages/{sid}/Media.json"
                },
                "to": to,
                "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
                "_sent": None,
                "_callback": callback,
            }
            answer = _public(message)
            self.messages.append(message)
            self.creates[_careflow_id(callback)] += 1
        # Handed to the carrier at once, delivered a little later.
        self._schedule(0.0, sid, "sent")
        self._schedule(self.delivered_after, sid, "delivered")
        return 201, answer, fault

    def _list(self, account: str, path: str, query: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            self.list_requests += 1
            found = [
                _public(m)
                for m in reversed(self.messages)
                if m["account_sid"] == account
                and ("To" not in query or m["to"] == query["To"])
                and ("From" not in query or m["from"] == query["From"])
                and _sent_matches(m["_sent"], query)
            ]
        size = max(1, min(int(query.get("PageSize", "50")), 1000))
        page = int(query.get("Page", "0"))
        chunk = found[page * size : (page + 1) * size]
        base = {k: v for k, v in query.items() if k not in ("Page", "PageToken")}

        def uri(n: int) -> str:
            return f"{path}?{urlencode({**base, 'Page': n})}"

        more = (page + 1) * size < len(found)
        return {
            "messages": chunk,
            "page": page,
            "page_size": size,
            "first_page_uri": uri(0),
            "previous_page_uri": uri(page - 1) if page > 0 else None,
            "next_page_uri": uri(page + 1) if more else None,
            "uri": uri(page),
            "start": page * size,
            "end": page * size + len(chunk) - 1,
        }

    # --- status callbacks -------------------------------------------------------------------

    def _schedule(self, delay: float, sid: str, status: str) -> None:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._due, (time.monotonic() + delay, self._seq, sid, status))
            self._cond.notify()

    def _scheduler(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while not self._due and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
                when, _, sid, status = self._due[0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._due)
            callback = self._advance(sid, status)
            if callback is not None:
                with self._outbox_cond:
                    self._outbox.append(callback)
                    self._outbox_cond.notify()

    def _advance(self, sid: str, status: str) -> tuple[str, dict[str, str]] | None:
        with self.lock:
            message = next(m for m in self.messages if m["sid"] == sid)
            now = datetime.now(UTC)
            message["status"] = status
            message["date_updated"] = format_datetime(now, usegmt=True)
            if status == "sent":
                message["date_sent"] = format_datetime(now, usegmt=True)
                message["_sent"] = now
            url = message["_callback"]
            if not url:
                return None
            form = {
                "AccountSid": message["account_sid"],
                "ApiVersion": "2010-04-01",
                "From": message["from"],
                "MessageSid": sid,
                "MessageStatus": status,
                "SmsSid": sid,
                "SmsStatus": status,
                "To": message["to"],
            }
            self.callbacks_sent[status] += 1
        return url, form

    def _sender(self) -> None:
        with httpx.Client(timeout=30) as client:
            while True:
                with self._outbox_cond:
                    while not self._outbox and not self._stop.is_set():
                        self._outbox_cond.wait(0.5)
                    if self._stop.is_set():
                        return
                    url, form = self._outbox.pop(0)
                headers = {"X-Twilio-Signature": twilio_signature(AUTH_TOKEN, url, form)}
                try:
                    answer: Any = client.post(url, data=form, headers=headers).status_code
                except httpx.HTTPError as exc:
                    answer = type(exc).__name__
                with self.lock:
                    self.callback_answers[answer] += 1

    def callbacks_pending(self) -> int:
        with self._cond, self._outbox_cond:
            return len(self._due) + len(self._outbox)

    # --- what the drill reads ---------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "messages": [_public(m) | {"callback": m["_callback"]} for m in self.messages],
                "creates": Counter(self.creates),
                "create_requests": self.create_requests,
                "list_requests": self.list_requests,
                "faults": Counter(self.faults),
                "refused": Counter(self.refused),
                "callbacks_sent": Counter(self.callbacks_sent),
                "callback_answers": Counter(self.callback_answers),
            }


def _careflow_id(callback: str | None) -> str:
    """careflow's message id, from the ``message_id`` in its StatusCallback query."""
    if not callback:
        return "(no StatusCallback)"
    return parse_qs(urlsplit(callback).query).get("message_id", ["(none)"])[0]


def _error(code: int, message: str, status: int) -> dict[str, Any]:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _public(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if not k.startswith("_")}


def _sent_matches(sent: datetime | None, query: dict[str, str]) -> bool:
    """Twilio's DateSent filters: a day (YYYY-MM-DD) or a time; ``DateSent>`` on or after,
    ``DateSent<`` on or before. A message not sent yet has no date to match."""
    for key, compare in (
        ("DateSent", lambda a, b: a == b),
        ("DateSent>", lambda a, b: a >= b),
        ("DateSent<", lambda a, b: a <= b),
    ):
        value = query.get(key)
        if value is None:
            continue
        if sent is None:
            return False
        if len(value) == 10:
            if not compare(sent.date(), date.fromisoformat(value)):
                return False
        elif not compare(sent, datetime.fromisoformat(value.replace("Z", "+00:00"))):
            return False
    return True

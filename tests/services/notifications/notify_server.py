"""A local HTTP server speaking GOV.UK Notify's API v2 (what the client library calls).

POST /v2/notifications/sms and /email answer 201 with the documented JSON, or the error
status and body a test asks for; GET /v2/notifications?reference= lists what it took.
Every request must carry a JWT signed with the API key's secret, as Notify checks.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt

SERVICE_ID = "26785a09-ab16-4eb0-8407-a37497a57506"
SECRET = "3d844edf-8d35-48ac-975b-e847b4f122b0"
API_KEY = f"fama_test-{SERVICE_ID}-{SECRET}"

ERRORS = {
    400: ("BadRequestError", "Can't send to this recipient using a team-only API key"),
    403: ("AuthError", "Invalid token: API key not found"),
    429: ("RateLimitError", "Exceeded rate limit for key type LIVE of 3000 requests per 60 seconds"),
    500: ("Exception", "Internal server error"),
}


class NotifyServer:
    def __init__(self):
        self.received: list[dict] = []  # every accepted notification
        self.requests: list[dict] = []  # every POST, accepted or not
        self.failures: list[int] = []  # statuses to answer next, in order (then 201)
        self.always: int | None = None  # answer this status to every POST
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str | None = None):
                name, default = ERRORS[status]
                self._reply(status, {"status_code": status, "errors": [{"error": name, "message": message or default}]})

            def _authorised(self) -> bool:
                header = self.headers.get("Authorization", "")
                if not header.startswith("Bearer "):
                    self._error(403, "Unauthorized: authentication token must be provided")
                    return False
                try:
                    claims = jwt.decode(header[7:], SECRET, algorithms=["HS256"], options={"verify_iat": True})
                except jwt.PyJWTError:
                    self._error(403, "Invalid token: signature, api token not found")
                    return False
                if claims.get("iss") != SERVICE_ID or abs(time.time() - claims.get("iat", 0)) > 30:
                    self._error(403, "Invalid token: iss or iat")
                    return False
                return True

            def do_POST(self):  # noqa: N802
                if not self._authorised():
                    return
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                kind = urlparse(self.path).path.rsplit("/", 1)[-1]
                with server.lock:
                    server.requests.append({"kind": kind, **body})
                    status = server.always or (server.failures.pop(0) if server.failures else 201)
                if status != 201:
                    return self._error(status)
                if kind not in ("sms", "email") or "template_id" not in body:
                    return self._error(400, "template_id is a required property")
                notification_id = str(uuid.uuid4())
                content = {"body": body.get("personalisation", {}).get("body", "")}
                if kind == "sms":
                    content["from_number"] = "GOVUK"
                else:
                    content.update(subject=body.get("personalisation", {}).get("subject", ""),
                                   from_email="fama@notifications.service.gov.uk")
                with server.lock:
                    server.received.append({"id": notification_id, "kind": kind, **body})
                self._reply(201, {
                    "id": notification_id, "reference": body.get("reference"), "content": content,
                    "uri": f"{server.url}/v2/notifications/{notification_id}",
                    "template": {"id": body["template_id"], "version": 1,
                                 "uri": f"{server.url}/v2/template/{body['template_id']}"},
                })

            def do_GET(self):  # noqa: N802
                if not self._authorised():
                    return
                query = parse_qs(urlparse(self.path).query)
                reference = query.get("reference", [None])[0]
                with server.lock:
                    found = [n for n in server.received if reference is None or n.get("reference") == reference]
                self._reply(200, {"notifications": [{"id": n["id"], "reference": n.get("reference"),
                                                     "status": "sending", "type": n["kind"]} for n in found],
                                  "links": {"current": f"{server.url}/v2/notifications"}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> NotifyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

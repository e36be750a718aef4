"""A loopback HTTP server that answers every request late: a byte or a header line at a time, or
only after a silence.

Each dripped piece comes well within any read timeout, so only a deadline for the whole call ends
a client's wait; a silence outlasts the read timeout itself. Stands in for an AWS endpoint (SES,
SQS) on a bad network:

    with DrippingHttp(part="body") as server:
        client = make_ses_client(settings, endpoint_url=server.url)
        ...
        assert server.requests == 1
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class DrippingHttp:
    """`part="headers"`: header lines drip; `part="body"`: the body drips, one byte per `every` s;
    `part="silence"`: nothing at all comes.

    That lasts `drip_for` seconds (or until `close`), then the answer `{"MessageId": "late-id"}` completes.
    """

    def __init__(self, *, part: str = "body", every: float = 0.1, drip_for: float = 10.0) -> None:
        self.requests = 0
        self.stop = threading.Event()
        outer = self
        drips = max(1, int(drip_for / every))

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802
                self._answer()

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer()

            def _answer(self) -> None:
                outer.requests += 1
                body = json.dumps({"MessageId": "late-id"}).encode()
                if part == "silence" and outer.stop.wait(drip_for):
                    return
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    if part == "headers":
                        self.flush_headers()  # status line and first header; the rest drip
                        for _ in range(drips):
                            if not self._drip(b"X-Still-Thinking: yes\r\n"):
                                return
                        self.wfile.write(f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                        return
                    dripped = 0 if part == "silence" else drips
                    self.send_header("Content-Length", str(dripped + len(body)))
                    self.end_headers()
                    for _ in range(dripped):
                        if not self._drip(b" "):  # JSON allows leading white space
                            return
                    self.wfile.write(body)
                except OSError:  # the client gave up
                    pass

            def _drip(self, piece: bytes) -> bool:
                if outer.stop.wait(every):
                    return False
                self.wfile.write(piece)
                return True

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> DrippingHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

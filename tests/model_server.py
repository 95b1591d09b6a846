"""A local HTTP server on 127.0.0.1 (a thread with http.server) serving model files written by the
tests, with switchable misbehaviour: cut the connection mid-body, ignore Range, answer with an HTML
page, lie about the size. Used by tests/test_catalogue.py."""
from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path


class ModelServer:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[dict] = []          # {"path", "range", "if_range", "status"}
        self.cut_once: dict[str, int] = {}      # path -> cut the body after N bytes (once)
        self.ignore_range = False
        self.html = False
        self.extra_bytes = 0                    # serve the file plus this many bytes (a different file)
        self.status: dict[str, int] = {}        # path -> forced status (404, 403, ...)
        self.etag_salt = ""                     # change it to make the file "change" on the server
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                rec = {"path": self.path, "range": self.headers.get("Range"),
                       "if_range": self.headers.get("If-Range"), "status": None}
                server.requests.append(rec)
                path = self.path.split("?")[0].lstrip("/")
                if path in server.status:
                    rec["status"] = server.status[path]
                    self.send_error(server.status[path])
                    return
                if server.html:
                    body = b"<!DOCTYPE html><html><body>Google Drive can't scan this file for viruses</body></html>"
                    rec["status"] = 200
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                f = server.root / path
                if not f.is_file():
                    rec["status"] = 404
                    self.send_error(404)
                    return
                data = f.read_bytes() + b"\0" * server.extra_bytes
                etag = '"' + hashlib.sha1(data + server.etag_salt.encode()).hexdigest() + '"'
                start = 0
                rng = self.headers.get("Range")
                ok_range = rng and not server.ignore_range and self.headers.get("If-Range") in (None, etag)
                if ok_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        rec["status"] = 416
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                    rec["status"] = 206
                else:
                    self.send_response(200)
                    rec["status"] = 200
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("ETag", etag)
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                body = data[start:]
                cut = server.cut_once.pop(path, None)
                try:
                    if cut is not None:
                        self.wfile.write(body[:cut])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):   # the client stopped reading (on purpose)
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        return False

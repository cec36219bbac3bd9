"""The benchmark's image host: a folder over loopback HTTP, in a process of its own.

    python -m benchmarks._image_host PORT FOLDER

`http.server` copies every file through Python in 64 KB reads and writes, which on two
shared cores charged the pipeline's side of the benchmark for its image host (measured: see
docs/performance.md). A real image host (a CDN, nginx) hands the file to the kernel; this
one does too (`socket.sendfile`), so what is measured is the pipeline's own download. It keeps
connections alive (HTTP/1.1), as image hosts and CDNs do: `http.server`'s HTTP/1.0 closed
each one, so every download paid for a new connection on both sides.

`GET /<file>?tag=<tag>` answers the file with a tag in it (`benchmarks._distinct`): the same
pixels in bytes of their own, so that no two images of a round share a content address.
"""

from __future__ import annotations

import os
import shutil
import sys
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from benchmarks import _distinct
from benchmarks._parent import die_with_parent


class SendfileHandler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        tag = parse_qs(urlsplit(self.path).query).get("tag", [""])[0]
        if not tag:
            super().do_GET()
            return
        path = self.translate_path(self.path)
        try:
            source = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        with source:
            size = os.fstat(source.fileno()).st_size
            head = source.read(_distinct.HEAD)
            try:
                at = _distinct.offset(head)
            except ValueError:
                self.send_error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
                return
            insert = _distinct.insertion(head, tag)
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", self.guess_type(path))
            self.send_header("Content-Length", str(size + len(insert)))
            self.end_headers()
            self.wfile.write(head[:at] + insert)
            self.wfile.flush()
            self.connection.sendfile(source, at)

    def copyfile(self, source: Any, outputfile: Any) -> None:
        if hasattr(source, "fileno"):
            self.wfile.flush()
            self.connection.sendfile(source)
        else:
            shutil.copyfileobj(source, outputfile)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main(argv: list[str]) -> None:
    die_with_parent()
    port, folder = int(argv[0]), argv[1]
    server = ThreadingHTTPServer(("127.0.0.1", port), partial(SendfileHandler, directory=folder))
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/python3
"""A real HTTP server for lbfo's end-to-end tests: Debian's python3 http.server, threaded.

    web.py ADDR PORT NAME CONTROL

Answers every GET with NAME and a newline as the body. CONTROL is a file the test rewrites at
any time: "STATUS [DELAY_MS]" (e.g. "503" or "200 40"); each request reads it, waits DELAY_MS
and answers with STATUS. A missing or unreadable file means "200 0". Prints "listening" once the
socket is bound, then serves until killed.
"""
import http.server
import socket
import sys
import time

addr, port, name, control = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]


def settings():
    try:
        with open(control) as f:
            words = f.read().split()
        return int(words[0]), int(words[1]) if len(words) > 1 else 0
    except (OSError, ValueError, IndexError):
        return 200, 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        status, delay_ms = settings()
        if delay_ms:
            time.sleep(delay_ms / 1000)
        body = (name + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # TCP checks connect and reset; clients that give up early reset too. Not news.
        pass


server = Server((addr, port), Handler)
print("listening", flush=True)
server.serve_forever()

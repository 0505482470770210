#!/usr/bin/env python3
"""A static HTTP server for the lab that never resolves names.

http_server.py ADDR PORT DIR   (logs one line per request with the peer address)

Python's http.server looks up the bound address's FQDN at start-up; inside the lab's
namespaces there is no resolver, so this server skips that lookup.
"""
import functools
import http.server
import socketserver
import sys


class Server(http.server.ThreadingHTTPServer):
    # Room for a few hundred clients connecting at once (the default backlog is 5).
    request_queue_size = 512

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


addr, port, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
with Server((addr, port), handler) as httpd:
    print(f"serving {root} on {addr}:{port}", flush=True)
    httpd.serve_forever()

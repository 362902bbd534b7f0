"""Traffic for the live tests, from Python's own HTTP and socket implementations.

    workload.py http-server HOST PORT COUNT    answer COUNT JSON-RPC POSTs, then exit
    workload.py http-client HOST PORT COUNT    send COUNT eth_getBalance calls on one connection
    workload.py udp-server  HOST PORT COUNT    echo COUNT datagrams, then exit
    workload.py udp-client  HOST PORT COUNT    send COUNT datagrams of 1000 bytes, await echoes

Each waits for a line on stdin before opening any socket (so the test can move it into a
cgroup first), and a server prints "ready" once it listens.
"""

import http.client
import http.server
import json
import socket
import sys

role, host, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sys.stdin.readline()
family = socket.AF_INET6 if ":" in host else socket.AF_INET


def ready():
    print("ready", flush=True)


if role == "http-server":

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            call = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body = json.dumps({"jsonrpc": "2.0", "id": call["id"], "result": "0x" + "5" * 3000})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    class Server(http.server.HTTPServer):
        address_family = family

    server = Server((host, port), Handler)
    ready()
    server.handle_request()  # one keep-alive connection carries every call
    server.server_close()
elif role == "http-client":
    conn = http.client.HTTPConnection(host, port)
    for i in range(count):
        call = {"jsonrpc": "2.0", "id": i, "method": "eth_getBalance", "params": ["0x" + "a" * 40, "latest"]}
        conn.request("POST", "/", json.dumps(call), {"Content-Type": "application/json"})
        conn.getresponse().read()
    conn.close()
elif role == "udp-server":
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, port))
    ready()
    for _ in range(count):
        data, peer = s.recvfrom(65536)
        s.sendto(data, peer)
elif role == "udp-client":
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(10)
    for i in range(count):
        s.sendto(bytes([i % 256]) * 1000, (host, port))
        s.recvfrom(65536)
else:
    sys.exit(f"unknown role {role}")

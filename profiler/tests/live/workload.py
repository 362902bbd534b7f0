"""Traffic for the live tests, from Python's own HTTP and socket implementations.

    workload.py http-server HOST PORT COUNT    answer COUNT JSON-RPC POSTs, then exit
    workload.py http-client HOST PORT COUNT    send COUNT eth_getBalance calls on one connection
    workload.py udp-server  HOST PORT COUNT    echo COUNT datagrams, then exit
    workload.py udp-client  HOST PORT COUNT    send COUNT datagrams of 1000 bytes, await echoes
    workload.py bulk-server HOST PORT COUNT    read COUNT bytes, answer COUNT/4 bytes, await close
    workload.py bulk-client HOST PORT COUNT    send COUNT bytes, read the answer, close at once
    workload.py short-server HOST PORT COUNT   accept COUNT connections, read each to its end
    workload.py short-client HOST PORT COUNT   open COUNT connections, 10,000 bytes on each
    workload.py stream-server HOST PORT COUNT  read until the client closes
    workload.py stream-client HOST PORT COUNT  connect, then send COUNT bytes at each further
                                               line on stdin; at end of input shut down,
                                               await the server's close, close
    workload.py burst-server HOST PORT COUNT   receive datagrams until COUNT arrived or 2 s pass
    workload.py burst-client HOST PORT COUNT   send COUNT datagrams of 400 bytes, no pause
    workload.py many-server HOST PORT COUNT    accept COUNT connections, then read each to its end
    workload.py many-client HOST PORT COUNT    open COUNT connections at once, send 10,000
                                               bytes on each, shut each down, await the closes

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
elif role == "many-server":
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(count)
    ready()
    conns = [listener.accept()[0] for _ in range(count)]
    listener.close()
    for conn in conns:
        while conn.recv(1 << 20):
            pass
        conn.close()
elif role == "many-client":
    conns = [socket.create_connection((host, port)) for _ in range(count)]
    for s in conns:
        s.sendall(bytes(10_000))
        s.shutdown(socket.SHUT_WR)
    for s in conns:
        while s.recv(65536):
            pass
        s.close()
elif role in ("bulk-server", "short-server", "stream-server"):
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1024)
    ready()
    for _ in range(count if role == "short-server" else 1):
        conn, _ = listener.accept()
        if role == "bulk-server":
            want = count
            while want > 0:
                want -= len(conn.recv(min(want, 1 << 20)))
            conn.sendall(bytes(count // 4))
        while conn.recv(1 << 20):
            pass
        conn.close()
    listener.close()
elif role == "bulk-client":
    s = socket.create_connection((host, port))
    s.sendall(bytes(count))
    want = count // 4
    while want > 0:
        want -= len(s.recv(min(want, 1 << 20)))
    s.close()
elif role == "short-client":
    for _ in range(count):
        s = socket.create_connection((host, port))
        s.sendall(bytes(10_000))
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
        s.close()
elif role == "stream-client":
    s = socket.create_connection((host, port))
    print("connected", flush=True)
    for _ in sys.stdin:
        s.sendall(bytes(count))
        print("sent", flush=True)
    s.shutdown(socket.SHUT_WR)  # the peer's FIN reaches this socket, not a time-wait socket
    while s.recv(65536):
        pass
    s.close()
elif role == "burst-server":
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((host, port))
    s.settimeout(2)
    ready()
    for _ in range(count):
        try:
            s.recvfrom(65536)
        except TimeoutError:
            break
elif role == "burst-client":
    s = socket.socket(family, socket.SOCK_DGRAM)
    for _ in range(count):
        s.sendto(bytes(400), (host, port))
else:
    sys.exit(f"unknown role {role}")

"""The application behind nginx in tests/auth/nginx_test.cpp: answers every
GET (and POST, its body read and dropped) with the X-Clerk-* headers it
received, one per line, so the test sees exactly what reached the upstream.  python3 upstream.py <port>"""
import http.server
import sys


class Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        lines = [f"path={self.path}"]
        for name in ("X-Clerk-User-Id", "X-Clerk-Session-Id", "X-Clerk-Role"):
            lines.append(f"{name.lower()}={self.headers.get(name, '')}")
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.do_GET()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo)
print("listening", flush=True)
server.serve_forever()

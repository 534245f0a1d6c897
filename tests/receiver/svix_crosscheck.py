#!/usr/bin/env python3
"""Cross-checks clerk-sync-receiver's signature verification against the
official svix library (a peer nobody here wrote).

svix signs a few hundred random bodies with random secrets and ids; the real
receiver must accept every one and reject each copy with one byte of the
body, the id or the timestamp changed. It runs as bench-receiver-no-kafka, the
receiver's own main built to acknowledge without Kafka: what is checked here
is verification, not Kafka.

usage: svix_crosscheck.py <path to bench-receiver-no-kafka> [count]
"""
import base64
import datetime
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time

from svix.webhooks import Webhook


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_text(rng, n):
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.:/\"\\\u00e9\u4e2d\U0001f600"
    return "".join(rng.choice(alphabet) for _ in range(n))


def main():
    exe = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    rng = random.Random(int.from_bytes(os.urandom(8), "big"))
    # Several secrets at once, as in a rotation; each body uses one of them.
    # Half of them without their trailing '=' padding (a double click stops
    # there), which svix reads as the same key: the receiver must too. The
    # last is as long as Clerk's (32 bytes: one '=', cut).
    secrets = ["whsec_" + base64.b64encode(os.urandom(rng.randint(16, 64))).decode() for _ in range(11)]
    secrets.append("whsec_" + base64.b64encode(os.urandom(32)).decode())
    secrets = [s.rstrip("=") if i % 2 else s for i, s in enumerate(secrets)]
    port = free_port()
    env = dict(os.environ)
    env.pop("CLERK_WEBHOOK_SECRET_FILE", None)
    env["CLERK_WEBHOOK_SECRET"] = ",".join(secrets)
    env.pop("NOTIFY_SOCKET", None)
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [exe, "--listen", f"127.0.0.1:{port}", "--log-level", "warn"],
        env=env, stdout=subprocess.DEVNULL, stderr=log)
    failures = []
    try:
        conn = None
        for _ in range(100):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/healthz")
                if conn.getresponse().read() and True:
                    break
            except OSError:
                conn = None
                time.sleep(0.1)
        if conn is None:
            raise SystemExit("receiver did not start")

        def post(msg_id, ts, sig, body):
            conn.request("POST", "/webhooks/clerk", body=body, headers={
                "svix-id": msg_id, "svix-timestamp": ts, "svix-signature": sig,
                "content-type": "application/json"})
            r = conn.getresponse()
            r.read()
            return r.status

        accepted = rejected = 0
        for i in range(count):
            secret = rng.choice(secrets)
            msg_id = "msg_" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(8, 30)))
            user = "user_" + random_text(rng, 10).replace("\"", "").replace("\\", "")
            body = json.dumps({"data": {"id": user, "first_name": random_text(rng, rng.randint(0, 40)),
                                        "public_metadata": {"note": random_text(rng, rng.randint(0, 2000))}},
                               "object": "event", "type": rng.choice(["user.created", "user.updated"]),
                               "timestamp": 1700000000000}, ensure_ascii=rng.random() < 0.5).encode()
            now = datetime.datetime.now(tz=datetime.timezone.utc)
            ts = str(int(now.timestamp()))
            sig = Webhook(secret).sign(msg_id, now, body.decode())
            status = post(msg_id, ts, sig, body)
            if status != 200:
                failures.append(f"#{i}: a valid delivery got {status}")
            accepted += status == 200
            # One byte of the body changed.
            pos = rng.randrange(len(body))
            changed = body[:pos] + bytes([body[pos] ^ (1 << rng.randrange(7)) or 1]) + body[pos + 1:]
            # One character of the id changed.
            k = rng.randrange(len(msg_id))
            bad_id = msg_id[:k] + ("x" if msg_id[k] != "x" else "y") + msg_id[k + 1:]
            # The timestamp moved by one second (still inside the tolerance).
            bad_ts = str(int(ts) + rng.choice([-1, 1]))
            for what, args in (("body", (msg_id, ts, sig, changed)), ("id", (bad_id, ts, sig, body)),
                               ("timestamp", (msg_id, bad_ts, sig, body))):
                status = post(*args)
                if status != 401:
                    failures.append(f"#{i}: {what} changed, got {status} instead of 401")
                rejected += status == 401
        print(f"svix cross-check: {accepted}/{count} signed by svix accepted, "
              f"{rejected}/{3 * count} tampered copies rejected")
    finally:
        proc.terminate()
        code = proc.wait(timeout=20)
        if code != 0:
            failures.append(f"receiver exited {code}")
    for f in failures[:20]:
        print(f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Writes the seed corpus of the `server` fuzz target (tests/fuzz/corpus/server).

Each seed is two control bytes (the client's write size; the fake
publisher's answer and Kafka's readiness, as tests/fuzz/targets/server.cpp
reads them) and the bytes a client sends: requests signed with the first
published Svix vector's secret, at that vector's timestamp (the target's
tolerance accepts it). Run from the repository's top: python3
tests/fuzz/support/server_seeds.py
"""
import base64
import hashlib
import hmac
import os

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # tests/fixtures/svix/svix-vectors.json, vector A
KEY = base64.b64decode(SECRET[len("whsec_"):])
TS = b"1614265330"

# The fake publisher's answers (byte 1, low three bits).
ACKED, REFUSED, QUEUE_FULL, TOO_LARGE, NEVER_REPORTED = range(5)
TOPIC_MISSING = 0x38


def fixture(name):
    with open(os.path.join("tests/fixtures/clerk", name), "rb") as f:
        return f.read().strip()


def signature(msg_id, body):
    mac = hmac.new(KEY, msg_id.encode() + b"." + TS + b"." + body, hashlib.sha256).digest()
    return b"v1," + base64.b64encode(mac)


def post(msg_id, body, extra=b"", chunked=False, signed_body=None, version=b"HTTP/1.1"):
    head = (b"POST /webhooks/clerk " + version + b"\r\nHost: 127.0.0.1\r\nsvix-id: " + msg_id.encode() +
            b"\r\nsvix-timestamp: " + TS + b"\r\nsvix-signature: " +
            signature(msg_id, body if signed_body is None else signed_body) +
            b"\r\nContent-Type: application/json\r\n" + extra)
    if not chunked:
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    half = len(body) // 2
    return (head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % half + body[:half] + b"\r\n" +
            b"%x\r\n" % (len(body) - half) + body[half:] + b"\r\n0\r\n\r\n")


def get(path):
    return b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def main():
    session, user = fixture("session.created.json"), fixture("user.updated.json")
    seeds = {
        "webhook": (0x10, ACKED, post("msg_1", session)),
        "pipelined": (0x40, ACKED, post("msg_1", session) + post("msg_2", user) + get(b"/healthz")),
        "chunked": (0x05, ACKED, post("msg_3", user, chunked=True)),
        "continue": (0x10, ACKED, post("msg_4", session, extra=b"Expect: 100-continue\r\n")),
        "bad_then_good": (0x20, ACKED, post("msg_5", session, signed_body=b"{}") + post("msg_6", session)),
        "readyz_down": (0x00, TOPIC_MISSING, get(b"/readyz") + post("msg_7", session)),
        "refused": (0x10, REFUSED, post("msg_8", session) + get(b"/readyz")),
        "publish_failing": (0x40, REFUSED, post("msg_16", session) + post("msg_17", session) +
                            post("msg_18", session) + get(b"/readyz")),
        "queue_full": (0x10, QUEUE_FULL, post("msg_9", session)),
        "too_large_for_kafka": (0x10, TOO_LARGE, post("msg_10", user)),
        "never_reported": (0x10, NEVER_REPORTED, post("msg_11", session) + get(b"/healthz")),
        "close_then_more": (0x30, ACKED, post("msg_12", session, extra=b"Connection: close\r\n") +
                            post("msg_13", session)),
        "http10": (0x30, ACKED, post("msg_14", session, version=b"HTTP/1.0") + get(b"/healthz")),
        "too_large": (0x80, ACKED,
                      b"POST /webhooks/clerk HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n" + b"x" * 3000),
        "not_found_then_hook": (0x10, ACKED, get(b"/nope") + post("msg_15", session)),
    }
    out = "tests/fuzz/corpus/server"
    os.makedirs(out, exist_ok=True)
    for name, (write_size, publisher, data) in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([write_size, publisher]) + data)


if __name__ == "__main__":
    main()

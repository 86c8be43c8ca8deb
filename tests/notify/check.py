"""Reads webhook deliveries as valhalla-ops makes them and checks each as a receiver would.

stdin: a JSON array of {"secret", "headers", "body"}. For each, the `Valhalla-Signature`
header is checked with Python's own hmac (HMAC-SHA256 of "<t>.<body>"), and the body is read
with the CloudEvents SDK (the `cloudevents` package) as a structured HTTP message. stdout: a
JSON array of what the SDK read. Any failure exits non-zero, saying why.
"""

import hashlib
import hmac
import json
import sys

from cloudevents.core.bindings.http import HTTPMessage, from_http_event


def verified(secret: bytes, header: str, body: bytes) -> None:
    parts = dict(part.split("=", 1) for part in header.split(","))
    signed = parts["t"].encode() + b"." + body
    expected = hmac.new(secret, signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts["v1"]):
        sys.exit(f"bad signature: {header}")


def main() -> None:
    read = []
    for delivery in json.load(sys.stdin):
        body = delivery["body"].encode()
        headers = {k.lower(): v for k, v in delivery["headers"].items()}
        verified(delivery["secret"].encode(), headers["valhalla-signature"], body)
        event = from_http_event(HTTPMessage(headers=headers, body=body))
        read.append(
            {
                "specversion": event.get_specversion(),
                "id": event.get_id(),
                "type": event.get_type(),
                "source": event.get_source(),
                "subject": event.get_subject(),
                "time": event.get_time().isoformat(),
                "severity": event.get_extension("severity"),
                "data": event.get_data(),
            }
        )
    json.dump(read, sys.stdout)


if __name__ == "__main__":
    main()

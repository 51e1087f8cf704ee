#!/usr/bin/env python3
"""An OTLP/HTTP logs receiver for logferry's tests, reading every request with the official
OpenTelemetry classes (PyPI `opentelemetry-proto`): protobuf with `ParseFromString`, OTLP/JSON
with `google.protobuf.json_format.Parse` against the same classes.

    otlp_receiver.py DIR

Writes DIR/port once listening. DIR/script.json (read at start, optional) is a list of answers
given in order before the normal one: {"status": 429, "headers": {"Retry-After": "1"}},
{"status": 200, "rejected": 2, "message": "..."} (a partial success), {"status": 400,
"message": "..."} (a google.rpc.Status, from PyPI `googleapis-common-protos`), {"status": 200,
"stall": 8} (the status, then one byte of the body and nothing for 8 s). DIR/max_body
(optional) answers 413 to a request larger than that many bytes once decompressed.

Every request is logged to DIR/requests.jsonl; every record of an accepted request to
DIR/records.jsonl, as plain JSON: time, observed, severity, body (AnyValue as JSON values) and
its kind, attributes, resource, scope.
"""

import gzip
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

DIR = sys.argv[1]
LOCK = threading.Lock()
SCRIPT = []
if os.path.exists(os.path.join(DIR, "script.json")):
    with open(os.path.join(DIR, "script.json")) as f:
        SCRIPT = json.load(f)
MAX_BODY = None
if os.path.exists(os.path.join(DIR, "max_body")):
    with open(os.path.join(DIR, "max_body")) as f:
        MAX_BODY = int(f.read().strip())


def plain(v):
    """An AnyValue as a JSON value, and its kind."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None, "empty"
    if kind == "kvlist_value":
        return {kv.key: plain(kv.value)[0] for kv in v.kvlist_value.values}, kind
    if kind == "array_value":
        return [plain(x)[0] for x in v.array_value.values], kind
    if kind == "bytes_value":
        return v.bytes_value.hex(), kind
    return getattr(v, kind), kind


def attrs(kvs):
    return {kv.key: plain(kv.value)[0] for kv in kvs}


def kinds(kvs):
    return {kv.key: plain(kv.value)[1] for kv in kvs}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        ctype = self.headers.get("Content-Type", "")
        enc = self.headers.get("Content-Encoding", "")
        log = {
            "path": self.path,
            "content_type": ctype,
            "content_encoding": enc,
            "bytes": len(body),
            "authorization": self.headers.get("Authorization"),
            "api_key": self.headers.get("X-Api-Key"),
        }
        answer = None
        try:
            raw = gzip.decompress(body) if enc == "gzip" else body
            req = logs_service_pb2.ExportLogsServiceRequest()
            if ctype == "application/json":
                json_format.Parse(raw.decode("utf-8"), req)
            elif ctype == "application/x-protobuf":
                req.ParseFromString(raw)
            else:
                raise ValueError(f"unexpected content type {ctype!r}")
        except Exception as e:  # the test reads the log and fails on it
            log["decode_error"] = repr(e)
            answer = {"status": 400, "message": f"undecodable: {e!r}"}
            req = None
        log["decoded_bytes"] = len(raw) if req is not None else None
        records = (sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)
                   if req is not None else None)
        # The script answers requests with records (not an empty check request).
        if answer is None and records:
            with LOCK:
                answer = SCRIPT.pop(0) if SCRIPT else None
        if answer is None and MAX_BODY is not None and len(raw) > MAX_BODY:
            answer = {"status": 413, "message": "request too large"}
        status = (answer or {}).get("status", 200)
        log["status"] = status
        if req is not None:
            log["records"] = records
            log["resources"] = len(req.resource_logs)
        out = []
        if 200 <= status < 300 and req is not None:
            for rl in req.resource_logs:
                res = attrs(rl.resource.attributes)
                for sl in rl.scope_logs:
                    scope = {"name": sl.scope.name, "version": sl.scope.version}
                    for r in sl.log_records:
                        b, bk = plain(r.body)
                        out.append(json.dumps({
                            "time": r.time_unix_nano,
                            "observed": r.observed_time_unix_nano,
                            "severity_number": r.severity_number,
                            "severity_text": r.severity_text,
                            "event_name": r.event_name,
                            "body": b,
                            "body_kind": bk,
                            "attributes": attrs(r.attributes),
                            "attribute_kinds": kinds(r.attributes),
                            "resource": res,
                            "scope": scope,
                        }))
        with LOCK:
            if out:
                with open(os.path.join(DIR, "records.jsonl"), "a") as f:
                    f.write("\n".join(out) + "\n")
            with open(os.path.join(DIR, "requests.jsonl"), "a") as f:
                f.write(json.dumps(log) + "\n")
        json_reply = ctype == "application/json"
        headers = dict((answer or {}).get("headers", {}))
        if 200 <= status < 300:
            resp = logs_service_pb2.ExportLogsServiceResponse()
            if answer and answer.get("rejected"):
                resp.partial_success.rejected_log_records = answer["rejected"]
                resp.partial_success.error_message = answer.get("message", "")
            payload = (json_format.MessageToJson(resp).encode() if json_reply
                       else resp.SerializeToString())
        else:
            st = status_pb2.Status(code=3, message=(answer or {}).get("message", ""))
            payload = (json_format.MessageToJson(st).encode() if json_reply
                       else st.SerializeToString())
        if (answer or {}).get("stall"):
            # The status and one byte of a promised body, then nothing for a while.
            self.send_response(status)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(answer["stall"])
            self.close_connection = True
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if json_reply else "application/x-protobuf")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)


def main():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = os.path.join(DIR, "port.tmp")
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, os.path.join(DIR, "port"))
    srv.serve_forever()


if __name__ == "__main__":
    main()

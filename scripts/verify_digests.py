#!/usr/bin/env python3
"""Checks a logferry integrity archive (a directory) without logferry: docs/verify.md.

    verify_digests.py ARCHIVE_DIR PUBLIC_KEY.pem

Every digest's Ed25519 signature, the digest chain, each entry's chain hash and link, sequence
gaps, the SHA-256 of every listed object, and objects that no digest lists. Exit 0 only when
nothing is wrong (run it on an archive whose writer is stopped: a running stream's newest
objects are in no digest until its hour ends).
Needs only the `cryptography` package.
"""
import base64, hashlib, json, os, sys
from cryptography.hazmat.primitives.serialization import load_pem_public_key

root, pub = sys.argv[1], load_pem_public_key(open(sys.argv[2], "rb").read())
problems, streams = [], {}
for dirpath, _, files in os.walk(os.path.join(root, "_digests")):
    for name in files:
        path = os.path.join(dirpath, name)
        key = os.path.relpath(path, root)
        body, sig = open(path, "rb").read().split(b"\n")[:2]
        try:
            pub.verify(base64.b64decode(json.loads(sig)["signature"]), body)
        except Exception:
            problems.append(f"bad signature: {key}")
            continue
        d = json.loads(body)
        streams.setdefault(d["stream"], []).append((key, d, hashlib.sha256(body).hexdigest(), json.loads(sig)["signature"]))

def entry_hash(stream, e):
    fields = ["logferry-chain/1", stream, str(e["seq"]), e["prev"], e["batch_id"], e["payload_sha256"],
              e["sealed_sha256"], str(e["records"]), e["first_time"], e["last_time"]]
    return hashlib.sha256("\n".join(fields).encode()).hexdigest()

for stream, digests in streams.items():
    digests.sort(key=lambda d: d[1]["from"])
    by_key = {k: (h, s) for k, _, h, s in digests}
    entries = {}
    for i, (key, d, _, _) in enumerate(digests):
        p = d["previous"]
        if p is None and i > 0:
            problems.append(f"digest chain restarts at {key}")
        elif p is not None and by_key.get(p["key"]) != (p["sha256"], p["signature"]):
            problems.append(f"previous digest of {key} missing or different: {p['key']}")
        if i > 0 and digests[i - 1][1]["to"] != d["from"]:
            problems.append(f"no digest covers {digests[i - 1][1]['to']} to {d['from']}")
        for e in d["entries"]:
            entries[e["seq"]] = e
    last = None
    for seq in sorted(entries):
        e = entries[seq]
        if e["hash"] != entry_hash(stream, e):
            problems.append(f"seq {seq}: fields do not give its hash")
        if seq != (last["seq"] + 1 if last else 1):
            problems.append(f"seq {(last['seq'] + 1) if last else 1}..{seq - 1} missing")
        elif e["prev"] != (last["hash"] if last else "0" * 64):
            problems.append(f"seq {seq} does not link to the one before")
        if e.get("dead_letter"):
            problems.append(f"seq {seq} was dead-lettered: {e['dead_letter']}")
        else:
            try:
                data = open(os.path.join(root, e["key"]), "rb").read()
                if hashlib.sha256(data).hexdigest() != e["sha256"]:
                    problems.append(f"modified: {e['key']}")
            except FileNotFoundError:
                problems.append(f"missing: {e['key']}")
        last = e

listed = {e["key"] for ds in streams.values() for _, d, _, _ in ds for e in d["entries"]}
for dirpath, dirs, files in os.walk(root):
    dirs[:] = [d for d in dirs if not (dirpath == root and d.startswith("_"))]
    for name in files:
        key = os.path.relpath(os.path.join(dirpath, name), root)
        if not (name.endswith(".meta.json") or name.startswith(".") or key in listed):
            problems.append(f"in no digest: {key}")

for p in problems:
    print(p)
print("CLEAN" if not problems else f"NOT CLEAN: {len(problems)} problems")
sys.exit(1 if problems else 0)

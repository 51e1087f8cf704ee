#!/usr/bin/env python3
"""Checks a logferry integrity archive (a directory) without logferry: docs/verify.md.

    verify_digests.py ARCHIVE_DIR PUBLIC_KEY.pem [--ledger]

Every digest's Ed25519 signature and name, the digest chain, each entry's chain hash and link,
sequence gaps, the SHA-256 of every listed object, links and special files, and every name that
no digest lists (only digests under _digests/, a listed object's .meta.json, signed access
receipts under _receipts/access/ and, with --ledger for an encrypting sink, _keys/ and
_receipts/ at the root are logferry's own). Exit 0 only when
nothing is wrong (run it on an archive whose writer is stopped: a running stream's newest
objects are in no digest until its hour ends).
Needs only the `cryptography` package.
"""
import base64, datetime, hashlib, json, os, re, stat, sys
from cryptography.hazmat.primitives.serialization import load_pem_public_key

root, pub = sys.argv[1], load_pem_public_key(open(sys.argv[2], "rb").read())
ledger = "--ledger" in sys.argv[3:]
problems, streams = [], {}

def digest_name(stream, start):
    """The names a digest of `stream` starting at `start` may have (its own first)."""
    t = datetime.datetime.fromisoformat(start.replace("Z", "+00:00").split(".")[0] + "+00:00"
                                        if "." in start else start.replace("Z", "+00:00"))
    frac = start.split(".")[1].rstrip("Z") if "." in start else ""
    on_hour = t.minute == 0 and t.second == 0 and frac.strip("0") == ""
    stem = t.strftime("%H") if on_hour else t.strftime("%H-%M-%S") + "." + (frac + "000")[:3]
    base = f"_digests/{stream}/{t.strftime('%Y/%m/%d')}/{stem}"
    return [f"{base}.json"] + [f"{base}-{n}.json" for n in range(1, 17)]

for dirpath, _, files in os.walk(os.path.join(root, "_digests")):
    for name in files:
        path = os.path.join(dirpath, name)
        key = os.path.relpath(path, root)
        if not stat.S_ISREG(os.lstat(path).st_mode):
            problems.append(f"not a regular file: {key}")
            continue
        try:
            body, sig = open(path, "rb").read().split(b"\n")[:2]
            pub.verify(base64.b64decode(json.loads(sig)["signature"]), body)
        except Exception:
            problems.append(f"bad signature or not a digest: {key}")
            continue
        d = json.loads(body)
        names = digest_name(d["stream"], d["from"])
        if key not in names:
            problems.append(f"digest not at the name its period gives: {key}")
            continue
        if key != names[0]:
            problems.append(f"digest written under another name (its own was taken): {key}")
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

# Access receipts (export, replay) at _receipts/access/: each signed by the same key over the
# exact bytes of its `receipt` text.
access = 0
access_dir = os.path.join(root, "_receipts", "access")
for dirpath, _, files in os.walk(access_dir):
    for name in files:
        path = os.path.join(dirpath, name)
        key = os.path.relpath(path, root)
        try:
            env = json.load(open(path))
            receipt = json.loads(env["receipt"])
            if receipt.get("format") == "logferry-shred-receipt-1" and ledger:
                continue  # a shredding receipt of a tenant named "access"
            pub.verify(base64.b64decode(env["signature"]), env["receipt"].encode())
            assert receipt["format"] == "logferry-access-receipt-1"
            access += 1
        except Exception:
            problems.append(f"access receipt not signed by the key, or not one: {key}")

listed = {e["key"] for ds in streams.values() for _, d, _, _ in ds for e in d["entries"]}
own = {"_digests"} | ({"_keys", "_receipts"} if ledger else set())
for dirpath, dirs, files in os.walk(root):
    if dirpath == root:
        dirs[:] = [d for d in dirs if d not in own]
    for name in dirs + files:
        path = os.path.join(dirpath, name)
        key = os.path.relpath(path, root)
        if key == "_receipts" or key.startswith("_receipts/access"):
            continue
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            problems.append(f"symbolic link: {key}")
        elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            problems.append(f"not a regular file: {key}")
        elif stat.S_ISREG(mode) and key not in listed and not (
                key.endswith(".meta.json") and key[:-len(".meta.json")] in listed):
            problems.append(f"in no digest: {key}")

for p in problems:
    print(p)
print(f"access receipts: {access} signed")
print("CLEAN" if not problems else f"NOT CLEAN: {len(problems)} problems")
sys.exit(1 if problems else 0)

#!/usr/bin/env python3
"""Decrypt a logferry encrypted object with only Python and `cryptography` (docs/encryption.md).

    decrypt.py --kek-file KEK --root LEDGER_ROOT OBJECT > records.ndjson      (local KEK)
    decrypt.py [--kms-endpoint URL] --public-key PUB --root LEDGER_ROOT OBJECT (aws_kms, boto3)

An entry of a KMS KEK is used only when it carries the signature of the [signing] key whose
public half (PEM or 64 hex digits) is given: anyone allowed to encrypt with the KMS key could
have written it.
"""
import argparse, base64, gzip, json, re, struct, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

def fields(buf, at, n):
    out = []
    for _ in range(n):
        (size,) = struct.unpack_from(">H", buf, at)
        out.append(buf[at + 2:at + 2 + size].decode())
        at += 2 + size
    return out, at

def signed_bytes(e):
    out = b"logferry-key-entry-1"
    for k in ("format", "key_id", "tenant", "hour", "kek", "provider", "wrapped", "kek_version", "bind"):
        v = (e.get(k) or "").encode()
        out += struct.pack(">I", len(v)) + v
    return out

def public_key(text):
    text = text.strip()
    if re.fullmatch(r"[0-9a-fA-F]{64}", text):
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    return serialization.load_pem_public_key(text.encode())

def entry_for(root, tenant, hour, key_id):
    if not (re.fullmatch(r"[0-9a-f]{1,64}", key_id) and re.fullmatch(r"[A-Za-z0-9._=@+-]+", tenant)
            and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d", hour)):
        sys.exit("the object's header names no key logferry could have made")
    for path in (f"{root}/_keys/{tenant}/{hour}/{key_id}.key", f"{root}/_keys/{tenant}/{hour}.key"):
        try:
            entry = json.load(open(path))
        except FileNotFoundError:
            continue
        if entry.get("key_id") == key_id:
            if (entry["tenant"], entry["hour"]) != (tenant, hour):
                sys.exit(f"forged ledger entry {path}: it names another tenant-hour")
            return path, entry
    sys.exit(f"key shredded: tenant {tenant} hour {hour}")

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kek-file")
    p.add_argument("--kms-endpoint")
    p.add_argument("--public-key", help="the [signing] key's public half (file)")
    p.add_argument("--root", required=True)
    p.add_argument("object")
    a = p.parse_args()
    obj = open(a.object, "rb").read()
    if obj[:5] != b"LFENC" or obj[5] not in (1, 2):
        sys.exit("not a version 1 or 2 logferry encrypted object")
    version = obj[5]
    (seg_size,) = struct.unpack_from(">I", obj, 6)
    iv_len = 7 if version == 1 else 32
    iv = obj[10:10 + iv_len]
    (key_id, tenant, hour, batch_id), start = fields(obj, 10 + iv_len, 4)
    aad = obj[:start]
    path, entry = entry_for(a.root, tenant, hour, key_id)
    if a.public_key:
        sig = entry.get("signature")
        pub = public_key(open(a.public_key).read())
        try:
            pub.verify(base64.b64decode(sig or ""), signed_bytes(entry))
        except Exception:
            sys.exit(f"forged ledger entry {path}: not signed by the given public key")
    elif entry["provider"] != "local":
        sys.exit(f"ledger entry {path} is of a {entry['provider']} KEK: give --public-key to check its signature")
    wrapped = base64.b64decode(entry["wrapped"])
    if entry["provider"] == "aws_kms":  # KMS opens it, bound to the tenant-hour by the context
        import boto3
        ctx = {"logferry:tenant": tenant, "logferry:hour": hour, "logferry:key_id": key_id}
        data_key = boto3.client("kms", endpoint_url=a.kms_endpoint).decrypt(
            CiphertextBlob=wrapped, EncryptionContext=ctx)["Plaintext"]
    else:
        kek = open(a.kek_file, "rb").read().strip()
        kek = bytes.fromhex(kek.decode()) if len(kek) == 64 else kek
        wrap_aad = b"LFKEY" + b"".join(struct.pack(">H", len(f)) + f for f in
                                       (key_id.encode(), tenant.encode(), hour.encode()))
        data_key = AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], wrap_aad)
    if version == 1:
        aes, prefix = AESGCM(data_key), iv
    else:  # a key of the object's own: HKDF-SHA256(salt, data key, info)
        sub = HKDF(algorithm=hashes.SHA256(), length=32, salt=iv,
                   info=b"logferry object key v2").derive(data_key)
        aes, prefix = AESGCM(sub), b"\0" * 7
    body, plain, i = obj[start:], [], 0
    while True:
        seg = body[i * (seg_size + 16):(i + 1) * (seg_size + 16)]
        last = (i + 1) * (seg_size + 16) >= len(body)
        plain.append(aes.decrypt(prefix + struct.pack(">IB", i, last), seg, aad))
        if last:
            break
        i += 1
    sys.stdout.buffer.write(gzip.decompress(b"".join(plain)))

main()

#!/usr/bin/env python3
"""Decrypt a logferry encrypted object with only Python and `cryptography` (docs/encryption.md).

    decrypt.py --kek-file KEK --root ARCHIVE_ROOT OBJECT > records.ndjson      (local KEK)
    decrypt.py [--kms-endpoint URL] --root ARCHIVE_ROOT OBJECT > records.ndjson (aws_kms, boto3)
"""
import argparse, base64, gzip, json, struct, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

def fields(buf, at, n):
    out = []
    for _ in range(n):
        (size,) = struct.unpack_from(">H", buf, at)
        out.append(buf[at + 2:at + 2 + size].decode())
        at += 2 + size
    return out, at

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--kek-file")
    p.add_argument("--kms-endpoint")
    p.add_argument("--root", required=True)
    p.add_argument("object")
    a = p.parse_args()
    obj = open(a.object, "rb").read()
    if obj[:5] != b"LFENC" or obj[5] != 1:
        sys.exit("not a version 1 logferry encrypted object")
    (seg_size,), prefix = struct.unpack_from(">I", obj, 6), obj[10:17]
    (key_id, tenant, hour, batch_id), start = fields(obj, 17, 4)
    aad = obj[:start]
    try:
        entry = json.load(open(f"{a.root}/_keys/{tenant}/{hour}.key"))
    except FileNotFoundError:
        sys.exit(f"key shredded: tenant {tenant} hour {hour}")
    if entry["key_id"] != key_id:
        sys.exit(f"ledger names key {entry['key_id']}, the object wants {key_id}")
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
    aes, body, plain, i = AESGCM(data_key), obj[start:], [], 0
    while True:
        seg = body[i * (seg_size + 16):(i + 1) * (seg_size + 16)]
        last = (i + 1) * (seg_size + 16) >= len(body)
        plain.append(aes.decrypt(prefix + struct.pack(">IB", i, last), seg, aad))
        if last:
            break
        i += 1
    sys.stdout.buffer.write(gzip.decompress(b"".join(plain)))

main()

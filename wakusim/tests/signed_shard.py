#!/usr/bin/env python3
"""Independent check of wakusim's signed-shard rule with hashlib and python3-cryptography.

Reads JSON on stdin: "check" holds messages signed by wakusim (hash and meta to verify),
"make" holds messages for this script to hash and sign. Writes JSON on stdout.
"""
import hashlib
import json
import struct
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

# Order of the secp256k1 group.
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def msg_hash(m):
    h = hashlib.sha256()
    h.update(m["pubsub_topic"].encode())
    h.update(bytes.fromhex(m["payload_hex"]))
    h.update(m["content_topic"].encode())
    h.update(struct.pack("<Q", m["timestamp"] % (1 << 64)))
    h.update(b"\x01" if m["ephemeral"] else b"\x00")
    return h.digest()


def verify(m):
    key = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256K1(), bytes.fromhex(m["public_key_hex"])
    )
    meta = bytes.fromhex(m["meta_hex"])
    r, s = int.from_bytes(meta[:32], "big"), int.from_bytes(meta[32:], "big")
    if len(meta) != 64 or s > N // 2:
        return False
    try:
        key.verify(encode_dss_signature(r, s), msg_hash(m), ec.ECDSA(Prehashed(hashes.SHA256())))
        return True
    except InvalidSignature:
        return False


def make(m):
    key = ec.derive_private_key(int(m["private_key_hex"], 16), ec.SECP256K1())
    digest = msg_hash(m)
    r, s = decode_dss_signature(key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256()))))
    low, high = min(s, N - s), max(s, N - s)
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    return {
        "hash_hex": digest.hex(),
        "meta_hex": (r.to_bytes(32, "big") + low.to_bytes(32, "big")).hex(),
        "meta_high_s_hex": (r.to_bytes(32, "big") + high.to_bytes(32, "big")).hex(),
        "public_key_hex": public.hex(),
    }


def main():
    job = json.load(sys.stdin)
    out = {
        "hashes": [msg_hash(m).hex() for m in job["check"]],
        "verified": [verify(m) for m in job["check"]],
        "made": [make(m) for m in job["make"]],
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

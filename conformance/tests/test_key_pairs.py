"""CreateKeyPair, ImportKeyPair, DescribeKeyPairs, DeleteKeyPair, with fingerprints
computed here independently with `cryptography`."""
import base64
import hashlib
import re

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from conftest import expect

KEY_ID = re.compile(r"^key-[0-9a-f]{17}$")


def colon_hex(digest):
    return ":".join(f"{b:02x}" for b in digest)


def ssh_blob(pub):
    line = pub.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return base64.b64decode(line.split()[1])


def sha256_b64(blob):
    return base64.b64encode(hashlib.sha256(blob).digest()).decode()


def same_b64_fp(got, want):
    # EC2 documents "base64-encoded SHA-256"; accept with or without '=' padding.
    return got.rstrip("=") == want.rstrip("=")


def test_create_rsa_key_pair_fingerprint(ec2, name):
    r = ec2.create_key_pair(KeyName=name)
    assert r["KeyName"] == name
    assert KEY_ID.match(r["KeyPairId"]), r["KeyPairId"]
    pem = r["KeyMaterial"]
    assert pem.startswith("-----BEGIN RSA PRIVATE KEY-----"), pem[:40]  # PKCS#1, as EC2 returns
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    assert r["KeyFingerprint"] == colon_hex(hashlib.sha1(der).digest())
    d = ec2.describe_key_pairs(KeyNames=[name])["KeyPairs"]
    assert len(d) == 1
    k = d[0]
    assert k["KeyPairId"] == r["KeyPairId"] and k["KeyFingerprint"] == r["KeyFingerprint"]
    assert k["KeyType"] == "rsa"
    assert k["CreateTime"].year >= 2024
    assert "PublicKey" not in k
    withpub = ec2.describe_key_pairs(KeyNames=[name], IncludePublicKey=True)["KeyPairs"][0]
    pubkey = serialization.load_ssh_public_key(withpub["PublicKey"].encode())
    assert pubkey.public_numbers() == key.public_key().public_numbers()


def test_create_ed25519_key_pair_fingerprint(ec2, name):
    r = ec2.create_key_pair(KeyName=name, KeyType="ed25519", KeyFormat="pem")
    pem = r["KeyMaterial"].encode()
    if b"OPENSSH PRIVATE KEY" in pem:
        key = serialization.load_ssh_private_key(pem, password=None)
    else:
        key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    want = sha256_b64(ssh_blob(key.public_key()))
    assert same_b64_fp(r["KeyFingerprint"], want), (r["KeyFingerprint"], want)
    k = ec2.describe_key_pairs(KeyNames=[name])["KeyPairs"][0]
    assert k["KeyType"] == "ed25519" and k["KeyFingerprint"] == r["KeyFingerprint"]


def test_import_rsa_key_pair_fingerprint(ec2, name):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key()
    line = pub.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b" me@host"
    r = ec2.import_key_pair(KeyName=name, PublicKeyMaterial=line)
    spki = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert r["KeyFingerprint"] == colon_hex(hashlib.md5(spki).digest())
    assert KEY_ID.match(r["KeyPairId"])
    k = ec2.describe_key_pairs(KeyNames=[name], IncludePublicKey=True)["KeyPairs"][0]
    assert k["KeyType"] == "rsa"
    assert serialization.load_ssh_public_key(k["PublicKey"].encode()).public_numbers() == pub.public_numbers()


def test_import_ed25519_key_pair_fingerprint(ec2, name):
    key = ed25519.Ed25519PrivateKey.generate()
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    r = ec2.import_key_pair(KeyName=name, PublicKeyMaterial=line)
    assert same_b64_fp(r["KeyFingerprint"], sha256_b64(ssh_blob(key.public_key())))
    assert ec2.describe_key_pairs(KeyNames=[name])["KeyPairs"][0]["KeyType"] == "ed25519"


def test_import_bad_key_material(ec2, name):
    expect("InvalidKey.Format", ec2.import_key_pair, KeyName=name, PublicKeyMaterial=b"ssh-rsa notbase64!!")


def test_duplicate_names(ec2, name):
    ec2.create_key_pair(KeyName=name)
    expect("InvalidKeyPair.Duplicate", ec2.create_key_pair, KeyName=name)
    key = ed25519.Ed25519PrivateKey.generate()
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    expect("InvalidKeyPair.Duplicate", ec2.import_key_pair, KeyName=name, PublicKeyMaterial=line)


def test_describe_filters_and_delete(ec2, name):
    a = ec2.create_key_pair(KeyName=name + "-a",
                            TagSpecifications=[{"ResourceType": "key-pair", "Tags": [{"Key": "team", "Value": "blue"}]}])
    assert a["Tags"] == [{"Key": "team", "Value": "blue"}]
    b = ec2.create_key_pair(KeyName=name + "-b", KeyType="ed25519")
    got = ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name + "-*"]}])["KeyPairs"]
    assert sorted(k["KeyName"] for k in got) == [name + "-a", name + "-b"]
    got = ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name + "-?"]},
                                          {"Name": "tag:team", "Values": ["blue"]}])["KeyPairs"]
    assert [k["KeyName"] for k in got] == [name + "-a"]
    assert got[0]["Tags"] == [{"Key": "team", "Value": "blue"}]
    got = ec2.describe_key_pairs(Filters=[{"Name": "key-pair-id", "Values": [b["KeyPairId"]]}])["KeyPairs"]
    assert [k["KeyName"] for k in got] == [name + "-b"]
    got = ec2.describe_key_pairs(KeyPairIds=[a["KeyPairId"]])["KeyPairs"]
    assert [k["KeyName"] for k in got] == [name + "-a"]
    got = ec2.describe_key_pairs(Filters=[{"Name": "fingerprint", "Values": [a["KeyFingerprint"]]}])["KeyPairs"]
    assert [k["KeyName"] for k in got] == [name + "-a"]
    d = ec2.delete_key_pair(KeyName=name + "-a")
    assert d.get("Return") is True
    assert d.get("KeyPairId") == a["KeyPairId"]
    ec2.delete_key_pair(KeyPairId=b["KeyPairId"])
    expect("InvalidKeyPair.NotFound", ec2.describe_key_pairs, KeyNames=[name + "-a"])
    expect("InvalidKeyPair.NotFound", ec2.describe_key_pairs, KeyPairIds=[b["KeyPairId"]])
    assert ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [name + "-*"]}])["KeyPairs"] == []


def test_unknown_key_pair_id(ec2):
    expect("InvalidKeyPair.NotFound", ec2.describe_key_pairs, KeyPairIds=["key-0123456789abcdef0"])


def test_missing_key_name(endpoint):
    import harness

    st, _, body = harness.raw_request(endpoint, {"Action": "CreateKeyPair"})
    assert st == 400 and harness.error_code(body)[0] == "MissingParameter"

"""Credentials for a Flower deployment on one machine (loopback): TLS and node keys.

    python deploy/flower/make_credentials.py OUT --nodes 2 [--host 127.0.0.1]

OUT/ca.crt (the certificate authority every party trusts), OUT/server.pem and OUT/server.key
(the SuperLink's TLS certificate for HOST, signed by the CA), and per node OUT/node_<i> (its
OpenSSH EC private key, given to ``flower-supernode --auth-supernode-private-key``) and
OUT/node_<i>.pub (registered on the SuperLink with ``flwr supernode register``). For trying the
deployment; a real federation makes and exchanges these the way its institutions require.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DAYS = 30


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _cert(subject, issuer, public_key, signer, *, ca: bool, host: str | None = None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DAYS))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if host is not None:
        try:
            names = [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
        except ValueError:
            names = [x509.DNSName(host)]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_tls(out: Path, host: str) -> None:
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = _cert(_name("feddat CA"), _name("feddat CA"), ca_key.public_key(), ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP384R1())
    server = _cert(_name(host), ca.subject, key.public_key(), ca_key, ca=False, host=host)
    (out / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (out / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (out / "server.key").write_bytes(_pem(key))
    (out / "server.key").chmod(0o600)


def make_node_key(out: Path, name: str) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    (out / name).write_bytes(private)
    (out / name).chmod(0o600)
    (out / f"{name}.pub").write_bytes(public + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--host", default="127.0.0.1", help="the SuperLink's address")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    make_tls(args.out, args.host)
    for i in range(args.nodes):
        make_node_key(args.out, f"node_{i}")


if __name__ == "__main__":
    main()

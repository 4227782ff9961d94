"""AWS's side of ``aws_iid`` for tests and benchmarks: instances in moto, their identity
documents signed as AWS signs them, and the instance metadata service that hands them out.

- :class:`AwsSigner` holds keys and self-signed certificates shaped as AWS's public ones and
  signs documents as AWS does: ``rsa2048`` is PKCS #7 signed data in OpenSSL's streaming BER
  (indefinite lengths, the document as a chunked OCTET STRING), base64 in 64-column lines;
  ``signature`` is SHA-256 RSA (with a 1024-bit key, as AWS's older one).
- :func:`launch_instance` runs an instance in moto (:class:`~pyspire_sdk.testing.aws.MotoServer`)
  with tags, a security group and an instance profile, in any account, and returns what its
  identity document says.
- :class:`FakeImds` serves that document on loopback as the metadata service does, IMDSv2
  sessions included::

    signer = AwsSigner()
    imds = FakeImds(signer)
    imds.serve(launch_instance(moto_server, tags={"name": "blog"}))
    async with imds.serving() as metadata:
        ...  # agent: ec2_metadata_endpoint=metadata.url; server: certificate_path=signer file
"""

from __future__ import annotations

__all__ = [
    "MOTO_IMAGE_ID",
    "AwsSigner",
    "FakeImds",
    "LaunchedInstance",
    "identity_document",
    "launch_instance",
    "streaming_ber",
]

import base64
import contextlib
import json
import secrets
import textwrap
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from pyspire_nodeattestor_aws_iid.pkcs7 import _encode_length, _read
from pyspire_sdk.testing.aws import DEFAULT_ACCOUNT_ID, AwsCredentials, MotoServer
from pyspire_sdk.testing.loopback import Handler, LoopbackServer, LoopbackThread, serve_loopback

MOTO_IMAGE_ID = "ami-03cf127a"
"""An Amazon Linux image moto knows in every region."""

_AWS_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Washington State"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Seattle"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Amazon Web Services LLC"),
    ]
)


def _self_signed(key: rsa.RSAPrivateKey) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(_AWS_NAME)
        .issuer_name(_AWS_NAME)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2195, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA256())
    )


def _indefinite(tag: int, body: bytes) -> bytes:
    return bytes([tag, 0x80]) + body + b"\x00\x00"


def _definite(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _encode_length(len(body)) + body


def streaming_ber(der: bytes, chunk: int = 1000) -> bytes:
    """DER PKCS #7 signed data re-encoded as OpenSSL streams it, and AWS serves it: the
    envelopes with indefinite lengths and the content in ``chunk``-byte segments; signer
    infos and certificates unchanged."""
    root, _ = _read(der, 0, 0)
    content_type, wrapper = root.children
    version, digests, encapsulated, *rest = wrapper.children[0].children
    data_type, content_wrapper = encapsulated.children
    content = content_wrapper.children[0].value
    segments = b"".join(
        _definite(0x04, content[start : start + chunk]) for start in range(0, len(content), chunk)
    )
    encapsulated_ber = _indefinite(
        0x30, data_type.encoded + _indefinite(0xA0, _indefinite(0x24, segments))
    )
    signed = _indefinite(
        0x30,
        version.encoded + digests.encoded + encapsulated_ber + b"".join(r.encoded for r in rest),
    )
    return _indefinite(0x30, content_type.encoded + _indefinite(0xA0, signed))


class AwsSigner:
    """Signs identity documents as AWS does, with test keys."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.certificate = _self_signed(self.key)
        # AWS signs `signature` with an RSA-1024 key; the test key has its size.
        self.legacy_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
        self.legacy_certificate = _self_signed(self.legacy_key)

    def rsa2048(self, document: str, *, streaming: bool = True) -> str:
        """The ``rsa2048`` signature of ``document``: base64 PKCS #7, 64 columns."""
        der = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(document.encode())
            .add_signer(self.certificate, self.key, hashes.SHA256())
            .sign(
                serialization.Encoding.DER, [pkcs7.PKCS7Options.NoCerts, pkcs7.PKCS7Options.Binary]
            )
        )
        encoded = base64.b64encode(streaming_ber(der) if streaming else der).decode()
        return "\n".join(textwrap.wrap(encoded, 64))

    def signature(self, document: str) -> str:
        """The ``signature`` of ``document``: base64 SHA-256 RSA (PKCS #1 v1.5)."""
        raw = self.legacy_key.sign(document.encode(), padding.PKCS1v15(), hashes.SHA256())
        return base64.b64encode(raw).decode()

    def write_certificates(self, path: Path, *, legacy: bool = True) -> Path:
        """The public certificates as a PEM file, as an operator configures AWS's."""
        pem = self.certificate.public_bytes(serialization.Encoding.PEM)
        if legacy:
            pem += self.legacy_certificate.public_bytes(serialization.Encoding.PEM)
        path.write_bytes(pem)
        return path


def identity_document(
    *,
    account_id: str,
    region: str,
    instance_id: str,
    image_id: str,
    availability_zone: str,
    **changes: Any,
) -> str:
    """An instance identity document as the metadata service serves it (``changes``
    override fields by AWS's names)."""
    fields: dict[str, Any] = {
        "accountId": account_id,
        "architecture": "x86_64",
        "availabilityZone": availability_zone,
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": image_id,
        "instanceId": instance_id,
        "instanceType": "t2.micro",
        "kernelId": None,
        "pendingTime": "2026-11-19T16:32:11Z",
        "privateIp": "10.158.112.84",
        "ramdiskId": None,
        "region": region,
        "version": "2017-09-30",
    }
    fields.update(changes)
    return json.dumps(fields, indent=2, separators=(",", " : "))


@dataclass(frozen=True)
class LaunchedInstance:
    """An instance running in moto, as its identity document and EC2 describe it."""

    instance_id: str
    account_id: str
    region: str
    image_id: str
    availability_zone: str
    security_group_id: str = ""
    role_arn: str = ""

    def document(self, **changes: Any) -> str:
        """Its identity document (``changes`` override fields by AWS's names)."""
        return identity_document(
            account_id=self.account_id,
            region=self.region,
            instance_id=self.instance_id,
            image_id=self.image_id,
            availability_zone=self.availability_zone,
            **changes,
        )


def _security_group(ec2: Any, name: str) -> str:
    found = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": [name]}])
    if found["SecurityGroups"]:
        return str(found["SecurityGroups"][0]["GroupId"])
    return str(ec2.create_security_group(GroupName=name, Description=name)["GroupId"])


def _instance_profile(iam: Any, role: str) -> str:
    """An instance profile named after ``role`` holding it; the role's ARN."""
    try:
        arn = iam.get_role(RoleName=role)["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        iam.create_instance_profile(InstanceProfileName=f"{role}Profile", Path="/nodes/")
        iam.add_role_to_instance_profile(InstanceProfileName=f"{role}Profile", RoleName=role)
    return str(arn)


def launch_instance(
    moto: MotoServer,
    *,
    account_id: str = DEFAULT_ACCOUNT_ID,
    region: str = "us-west-2",
    tags: Mapping[str, str] | None = None,
    security_group: str = "",
    role: str = "",
) -> LaunchedInstance:
    """Run an instance in moto (blocking calls to the moto server) in ``account_id``'s
    ``region``, with ``tags``, in ``security_group`` and with an instance profile holding
    ``role`` (each made when missing, none when empty)."""
    credentials: AwsCredentials | None = None
    if account_id != DEFAULT_ACCOUNT_ID:
        credentials = moto.assume_role(account_id)
    ec2 = moto.client("ec2", region=region, credentials=credentials)
    image = MOTO_IMAGE_ID
    zone = f"{region}b"
    options: dict[str, Any] = {"Placement": {"AvailabilityZone": zone}}
    group = _security_group(ec2, security_group) if security_group else ""
    if group:
        options["SecurityGroupIds"] = [group]
    role_arn = ""
    if role:
        role_arn = _instance_profile(moto.client("iam", credentials=credentials), role)
        options["IamInstanceProfile"] = {"Name": f"{role}Profile"}
    if tags:
        pairs = [{"Key": key, "Value": value} for key, value in tags.items()]
        options["TagSpecifications"] = [{"ResourceType": "instance", "Tags": pairs}]
    launched = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, **options)
    return LaunchedInstance(
        instance_id=launched["Instances"][0]["InstanceId"],
        account_id=account_id,
        region=region,
        image_id=image,
        availability_zone=zone,
        security_group_id=group,
        role_arn=role_arn,
    )


@dataclass
class FakeImds:
    """The instance metadata service of one instance at a time (the last :meth:`serve`d).

    ``sessions`` is how it treats IMDSv2: ``"required"`` (reads need a session token, as on
    instances that enforce IMDSv2) or ``"absent"`` (the token PUT answers 405 and reads need
    none, as before IMDSv2). A test swaps ``signer`` for another
    :class:`AwsSigner` to serve signatures AWS did not make."""

    signer: AwsSigner
    sessions: Literal["required", "absent"] = "required"
    document: str = ""
    tokens: set[str] = field(default_factory=set)
    _signed: dict[tuple[int, str, str], str] = field(default_factory=dict)

    def serve(self, instance: LaunchedInstance, **changes: Any) -> str:
        """Speak for ``instance`` from now on; its document (``changes`` override fields)."""
        self.document = instance.document(**changes)
        return self.document

    def _sign(self, kind: str) -> str:
        key = (id(self.signer), kind, self.document)
        if key not in self._signed:
            sign = self.signer.rsa2048 if kind == "rsa2048" else self.signer.signature
            self._signed[key] = sign(self.document)
        return self._signed[key]

    async def _token(self, request: web.Request) -> web.Response:
        if self.sessions == "absent":
            raise web.HTTPMethodNotAllowed("PUT", ["GET"])
        ttl = request.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            raise web.HTTPBadRequest(text="invalid ttl")
        token = secrets.token_urlsafe(32)
        self.tokens.add(token)
        return web.Response(text=token)

    async def _identity(self, request: web.Request) -> web.Response:
        token = request.headers.get("X-aws-ec2-metadata-token")
        if token is not None and token not in self.tokens:
            raise web.HTTPUnauthorized()
        if token is None and self.sessions == "required":
            raise web.HTTPUnauthorized()
        name = request.match_info["name"]
        if not self.document:
            raise web.HTTPNotFound()
        if name == "document":
            return web.Response(text=self.document)
        if name in ("signature", "rsa2048"):
            return web.Response(text=self._sign(name))
        raise web.HTTPNotFound()

    def routes(self) -> list[tuple[str, str, Handler]]:
        """The metadata service's routes."""
        return [
            ("PUT", "/latest/api/token", self._token),
            ("GET", "/latest/dynamic/instance-identity/{name}", self._identity),
        ]

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[LoopbackServer]:
        """Serve on loopback (plain HTTP, as the metadata service) until the block ends."""
        async with serve_loopback(self.routes()) as server:
            yield server

    @contextlib.contextmanager
    def serving_in_thread(self) -> Iterator[LoopbackServer]:
        """:meth:`serving` for synchronous callers (end-to-end tests, benchmarks)."""
        with LoopbackThread(self.routes()) as server:
            yield server

"""moto's server mode on loopback, standing in for AWS in the tests of plugins that call it.

A plugin that calls EC2, IAM, STS, KMS, Secrets Manager or S3 is tested against moto serving
those APIs over a real socket on 127.0.0.1, through the same SDK calls it makes against AWS,
rather than against a mock of its client::

    with MotoServer() as aws:
        aws.client("ec2", region="us-west-2").run_instances(...)  # seed what the test needs
        os.environ.update(aws.environment())                      # the plugin's SDK finds it

:meth:`MotoServer.environment` points every AWS SDK at the server the standard way
(``AWS_ENDPOINT_URL`` and test credentials), so a plugin needs no setting of its own for
tests, and a real process started with that environment calls moto too. moto keeps one state
per account: credentials from :meth:`MotoServer.assume_role` act in the role's account, which
is how a test puts resources in another account. :meth:`MotoServer.reset` forgets everything.

The pytest plugin of the SDK offers the ``moto_server`` fixture: one server per test session,
shared by its tests (see there). moto (``moto[server]``) is imported only when a server
starts, so this module imports without it.
"""

from __future__ import annotations

__all__ = ["DEFAULT_ACCOUNT_ID", "AwsCredentials", "MotoServer"]

import logging
import urllib.request
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

DEFAULT_ACCOUNT_ID = "123456789012"
"""The account moto acts in for the test credentials (moto's default)."""

_DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class AwsCredentials:
    """Credentials as AWS SDKs take them; moto accepts any, and maps assumed-role ones to the
    role's account."""

    access_key_id: str = "testing"
    secret_access_key: str = field(default="testing", repr=False)
    session_token: str = field(default="", repr=False)


class MotoServer:
    """A moto server on an ephemeral port of 127.0.0.1, in a thread of this process."""

    def __init__(self, *, region: str = _DEFAULT_REGION) -> None:
        self.region = region
        self.credentials = AwsCredentials()
        self.url = ""
        self._server: Any = None

    def start(self) -> MotoServer:
        """Start serving; raises :class:`RuntimeError` naming the package when moto is
        missing."""
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as error:
            raise RuntimeError(
                f"moto's server mode is needed here: install 'moto[server]' ({error})"
            ) from None
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        self._server = server
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        """Stop serving (what it held is gone)."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every resource of every account and region (moto then takes a second or more
        to set up a region again at its first call)."""
        request = urllib.request.Request(self.url + "/moto-api/reset", method="POST")  # noqa: S310 - loopback http
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            answer.read()

    def environment(self) -> dict[str, str]:
        """Variables that send every AWS SDK's calls to this server, with test credentials."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": self.credentials.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.credentials.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(
        self, service: str, *, region: str | None = None, credentials: AwsCredentials | None = None
    ) -> Any:
        """A boto3 client of ``service`` on this server, to seed or inspect what a test
        needs; ``credentials`` from :meth:`assume_role` act in another account."""
        import boto3

        used = credentials or self.credentials
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=region or self.region,
            aws_access_key_id=used.access_key_id,
            aws_secret_access_key=used.secret_access_key,
            aws_session_token=used.session_token or None,
        )

    def assume_role(self, account_id: str, role_name: str = "test-seeder") -> AwsCredentials:
        """Credentials acting in ``account_id`` (moto does not check that the role exists)."""
        answer = self.client("sts").assume_role(
            RoleArn=f"arn:aws:iam::{account_id}:role/{role_name}", RoleSessionName="pyspire-test"
        )
        issued = answer["Credentials"]
        return AwsCredentials(
            access_key_id=issued["AccessKeyId"],
            secret_access_key=issued["SecretAccessKey"],
            session_token=issued["SessionToken"],
        )

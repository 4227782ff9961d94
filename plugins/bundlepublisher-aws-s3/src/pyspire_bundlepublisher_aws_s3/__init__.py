"""The ``aws_s3`` bundle publisher: the trust bundle uploaded to an Amazon S3 object on every
change, as SPIRE's."""

from pyspire_bundlepublisher_aws_s3.config import PLUGIN_NAME, AwsS3Config
from pyspire_bundlepublisher_aws_s3.publisher import AwsS3Publisher

__all__ = ["PLUGIN_NAME", "AwsS3Config", "AwsS3Publisher"]

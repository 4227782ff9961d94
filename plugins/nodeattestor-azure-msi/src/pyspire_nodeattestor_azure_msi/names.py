"""Names both halves of ``azure_msi`` agree on (SPIRE's ``pkg/common/plugin/azure``)."""

from __future__ import annotations

__all__ = ["DEFAULT_IMDS_ENDPOINT", "DEFAULT_RESOURCE_ID", "IMDS_API_VERSION", "PLUGIN_NAME"]

PLUGIN_NAME = "azure_msi"
DEFAULT_RESOURCE_ID = "https://management.azure.com/"
"""The audience of MSI tokens unless configured: the Resource Manager API's service ID."""
DEFAULT_IMDS_ENDPOINT = "http://169.254.169.254"
"""Azure's Instance Metadata Service."""
IMDS_API_VERSION = "2018-02-01"

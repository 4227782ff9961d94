"""Names both halves of ``k8s_psat`` agree on (SPIRE's ``pkg/common/plugin/k8s``)."""

from __future__ import annotations

__all__ = ["PLUGIN_NAME", "POD_NAME_KEY", "POD_UID_KEY"]

PLUGIN_NAME = "k8s_psat"
POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
"""The TokenReview ``user.extra`` key naming the pod a projected token is bound to."""
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"

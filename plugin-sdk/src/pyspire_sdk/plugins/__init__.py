"""One module per plugin type: its pluggy hookspec, the interface its objects implement, and
the contract those objects keep.

| module | hook(s) | interface | side |
|---|---|---|---|
| ``datastore`` | ``pyspire_datastores`` | ``DataStore`` | server |
| ``key_manager`` | ``pyspire_key_managers`` | ``KeyManager`` | server, agent |
| ``node_attestor`` | ``pyspire_server_node_attestors``, | ``ServerNodeAttestor``, | server |
| | ``pyspire_agent_node_attestors`` | ``AgentNodeAttestor`` | agent |
| ``workload_attestor`` | ``pyspire_workload_attestors`` | ``WorkloadAttestor`` | agent |
| ``upstream_authority`` | ``pyspire_upstream_authorities`` | ``UpstreamAuthority`` | server |
| ``notifier`` | ``pyspire_notifiers`` | ``Notifier`` | server |
| ``bundle_publisher`` | ``pyspire_bundle_publishers`` | ``BundlePublisher`` | server |
| ``credential_composer`` | ``pyspire_credential_composers`` | ``CredentialComposer`` | server |
| ``svid_store`` | ``pyspire_svid_stores`` | ``SvidStore`` | agent |

``pyspire_sdk.hookspecs.add_hookspecs`` registers all of them on a plugin manager.
"""

__all__: list[str] = []  # the surface is the modules above, one per plugin type

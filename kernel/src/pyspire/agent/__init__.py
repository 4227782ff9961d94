"""The agent: attests its node, syncs what it may issue, and serves the Workload API."""

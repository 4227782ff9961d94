"""A load generator for one ``pyspire-server``: many simulated agents, real requests.

Each simulated agent is built from the agent's own parts (:class:`~pyspire.agent.client.
ServerClient`, :class:`~pyspire.agent.node_identity.NodeIdentity`,
:class:`~pyspire.agent.cache.WorkloadCache` and :class:`~pyspire.agent.sync.SyncManager`), so
it attests with a join token, pins the bundle, syncs its authorized entries and bundle, mints
and rotates its workload SVIDs and renews its own SVID exactly as ``pyspire-agent`` does; what
it leaves out is the Workload API and the disk. Agents run in worker processes
(:mod:`loadgen.worker`), each from its own loopback source address (:mod:`loadgen.source`),
against a real server process; an admin process (:mod:`loadgen.churn`) changes entries while
they sync. :mod:`loadgen.run` drives the phases and :mod:`loadgen.report` prints the figures.

The entry point is ``tests/bench/bench_agent_load.py``; ``tests/e2e/test_agent_load.py`` runs a
small form with the test suite.
"""

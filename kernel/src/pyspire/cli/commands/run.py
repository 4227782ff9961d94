"""``run``: start the server or the agent in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

__all__ = ["COMMANDS"]

import argparse
import asyncio
import signal
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import anyio

from pyspire.catalog import Discovery, Side
from pyspire.cli.flags import add_flag
from pyspire.cli.printable import printable
from pyspire.cli.registry import CliContext, Command
from pyspire.collector import YoungSweep, freeze_startup_heap, tune_collector
from pyspire.config import LoadedConfig, load_agent_config, load_server_config
from pyspire.telemetry.logging import configure_logging, parse_log_format, parse_log_level
from pyspire_sdk.clock import Clock, SystemClock
from pyspire_sdk.errors import ConfigError


def _add_server_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_flag(
        parser,
        "config",
        metavar="FILE",
        type=Path,
        default=Path("conf/server/server.toml"),
        help="path to the configuration file (default: conf/server/server.toml)",
    )
    add_flag(parser, "expandEnv", action="store_true", help="expand $VAR in the file first")
    add_flag(parser, "bindAddress", metavar="IP", help="address the agent API listens on")
    add_flag(parser, "serverPort", metavar="PORT", type=int, help="port the agent API listens on")
    add_flag(parser, "socketPath", metavar="PATH", help="path of the admin API unix socket")
    add_flag(parser, "trustDomain", metavar="NAME", help="the trust domain")
    add_flag(parser, "dataDir", metavar="DIR", help="where the server keeps its state")
    add_flag(parser, "logLevel", metavar="LEVEL", help="DEBUG, INFO, WARN or ERROR")
    add_flag(parser, "logFormat", metavar="FORMAT", help="text, json or auto")
    add_flag(parser, "logFile", metavar="FILE", help="append logs to this file")


class _Runtime(Protocol):
    ready: asyncio.Event

    def stop(self) -> None: ...

    async def run(self) -> None: ...


async def _run_in_foreground(
    context: CliContext,
    load: Callable[[], LoadedConfig[Any]],
    build: Callable[[LoadedConfig[Any], Discovery], _Runtime],
) -> int:
    """Load the configuration (every problem reported), set up logging as it says, build the
    runtime and run it until SIGINT or SIGTERM asks it to stop. The process's collector
    follows :mod:`pyspire.collector`: tuned now, what start-up built frozen once ready (and
    the server's runtime, built to, freezes again after each attestation storm)."""
    tune_collector()
    try:
        loaded = await asyncio.to_thread(load)
    except ConfigError as error:
        for issue in error.issues:
            context.err(printable(str(issue)))
        return 1
    settings = loaded.settings
    configure_logging(
        parse_log_level(settings.log_level),
        parse_log_format(settings.log_format),
        settings.log_file,
    )
    discovery = await asyncio.to_thread(context.discover)
    runtime = build(loaded, discovery)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, runtime.stop)
    try:
        await _run_freezing_when_ready(runtime)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0


async def _freeze_when_ready(ready: asyncio.Event, clock: Clock) -> None:
    """Freeze the start-up heap once the runtime is ready, then sweep the young generation
    on a timer (:class:`~pyspire.collector.YoungSweep`) until cancelled."""
    await ready.wait()
    freeze_startup_heap()
    await YoungSweep(clock).run()


async def _run_freezing_when_ready(runtime: _Runtime, clock: Clock | None = None) -> None:
    """``runtime.run()``, its start-up heap frozen once it is ready and its young generation
    swept from then on (on ``clock``, the system's by default); its failure raised as
    itself."""
    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(_freeze_when_ready, runtime.ready, clock or SystemClock())
        try:
            await runtime.run()
        except Exception as error:
            failure = error
        finally:
            group.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def _run_server(args: argparse.Namespace, context: CliContext) -> int:
    from pyspire.server.runtime import ServerRuntime

    overrides = {
        "bind_address": args.bind_address,
        "bind_port": args.server_port,
        "socket_path": args.socket_path,
        "trust_domain": args.trust_domain,
        "data_dir": args.data_dir,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "log_file": args.log_file,
    }
    return await _run_in_foreground(
        context,
        lambda: load_server_config(
            args.config, expand_env=args.expand_env, overrides=overrides, environ=context.environ
        ),
        partial(ServerRuntime, freeze_when_settled=True),
    )


RUN = Command(
    name="run",
    summary="run the server in the foreground",
    description=(
        "Start the server: plugins, CA, registry, the agent API on bind_address:bind_port and "
        "the admin API on socket_path. Stops cleanly on SIGINT or SIGTERM."
    ),
    sides=frozenset({Side.SERVER}),
    handler=_run_server,
    add_flags=_add_server_flags,
)


def _add_agent_flags(parser: argparse.ArgumentParser, side: Side) -> None:
    add_flag(
        parser,
        "config",
        metavar="FILE",
        type=Path,
        default=Path("conf/agent/agent.toml"),
        help="path to the configuration file (default: conf/agent/agent.toml)",
    )
    add_flag(parser, "expandEnv", action="store_true", help="expand $VAR in the file first")
    add_flag(
        parser,
        "joinToken",
        metavar="TOKEN",
        help="join token to attest with (visible to other users in the process list: prefer "
        "-joinTokenFile)",
    )
    add_flag(
        parser,
        "joinTokenFile",
        metavar="FILE",
        help="file holding the join token to attest with; refused when others may read it",
    )
    add_flag(parser, "serverAddress", metavar="HOST", help="address of the pyspire server")
    add_flag(parser, "serverPort", metavar="PORT", type=int, help="port of the pyspire server")
    add_flag(parser, "socketPath", metavar="PATH", help="path of the Workload API socket")
    add_flag(parser, "trustBundle", metavar="FILE", help="bootstrap trust bundle file")
    add_flag(parser, "trustBundleUrl", metavar="URL", help="bootstrap trust bundle URL (https)")
    add_flag(parser, "trustDomain", metavar="NAME", help="the trust domain")
    add_flag(parser, "dataDir", metavar="DIR", help="where the agent keeps its state")
    add_flag(parser, "logLevel", metavar="LEVEL", help="DEBUG, INFO, WARN or ERROR")
    add_flag(parser, "logFormat", metavar="FORMAT", help="text, json or auto")
    add_flag(parser, "logFile", metavar="FILE", help="append logs to this file")


async def _run_agent(args: argparse.Namespace, context: CliContext) -> int:
    from pyspire.agent.runtime import AgentRuntime

    overrides = {
        "join_token": args.join_token,
        "join_token_file": args.join_token_file,
        "server_address": args.server_address,
        "server_port": args.server_port,
        "socket_path": args.socket_path,
        "trust_bundle_path": args.trust_bundle,
        "trust_bundle_url": args.trust_bundle_url,
        "trust_domain": args.trust_domain,
        "data_dir": args.data_dir,
        "log_level": args.log_level,
        "log_format": args.log_format,
        "log_file": args.log_file,
    }
    if args.trust_bundle_url:
        overrides["trust_bundle_path"] = None

    def warn(message: str) -> None:
        context.err(f"{context.prog}: warning: {message}")

    return await _run_in_foreground(
        context,
        lambda: load_agent_config(
            args.config, expand_env=args.expand_env, overrides=overrides, environ=context.environ
        ),
        lambda loaded, discovery: AgentRuntime(loaded, discovery, notify=warn),
    )


AGENT_RUN = Command(
    name="run",
    summary="run the agent in the foreground",
    description=(
        "Start the agent: attest the node (or resume), sync entries and SVIDs from the server, "
        "and serve the SPIFFE Workload API on socket_path. Stops cleanly on SIGINT or SIGTERM."
    ),
    sides=frozenset({Side.AGENT}),
    handler=_run_agent,
    add_flags=_add_agent_flags,
)

COMMANDS: tuple[Command, ...] = (RUN, AGENT_RUN)

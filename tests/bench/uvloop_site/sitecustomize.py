"""Puts every event loop of a Python process started with this folder on ``PYTHONPATH`` on
uvloop (see :func:`event_loops.loop_environment`): the benchmarks run a server on uvloop and on
asyncio's own loop, unchanged, to compare them."""

import asyncio

import uvloop

asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

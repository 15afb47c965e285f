"""What the DAG layer costs over plain ``.remote`` calls, and awaiting refs in asyncio.

Run: python -m pytest benchmarks/bench_dag.py --benchmark-only

* ``test_chain_remote_10`` / ``test_chain_dag_10``: a chain of 10 dependent tasks, submitted
  with ``.remote`` by hand, and as a prebuilt graph with ``execute`` (the difference is the
  graph walk: topological order and argument resolution, per execute).
* ``test_dag_build_and_execute_10``: the same chain built with ``.bind`` on every round.
* ``test_asyncio_gather_100``: 100 task refs awaited with ``asyncio.gather``.
"""

import asyncio

import purerun
from purerun.dag import InputNode

CHAIN = 10


@purerun.remote
def inc(x):
    return x + 1


def _chain_remote():
    ref = inc.remote(0)
    for _ in range(CHAIN - 1):
        ref = inc.remote(ref)
    return purerun.get(ref)


def _build_chain():
    with InputNode() as inp:
        node = inc.bind(inp)
        for _ in range(CHAIN - 1):
            node = inc.bind(node)
    return node


def test_chain_remote_10(benchmark, cluster):
    assert benchmark(_chain_remote) == CHAIN


def test_chain_dag_10(benchmark, cluster):
    dag = _build_chain()
    assert benchmark(lambda: purerun.get(dag.execute(0))) == CHAIN


def test_dag_build_and_execute_10(benchmark, cluster):
    assert benchmark(lambda: purerun.get(_build_chain().execute(0))) == CHAIN


def test_asyncio_gather_100(benchmark, cluster):
    async def gather():
        return await asyncio.gather(*[inc.remote(i) for i in range(100)])

    result = benchmark.pedantic(lambda: asyncio.run(gather()), rounds=5, warmup_rounds=1)
    assert result == list(range(1, 101))

"""``multiprocessing.Pool`` on purerun (Ray's ``ray.util.multiprocessing``).

Replace ``from multiprocessing import Pool`` with
``from purerun.util.multiprocessing import Pool``: the same API, with the workers run as
purerun actors, so a pool can use a whole cluster.
"""

from multiprocessing import JoinableQueue, TimeoutError

from .pool import AsyncResult, IMapIterator, IMapUnorderedIterator, Pool

__all__ = ["AsyncResult", "IMapIterator", "IMapUnorderedIterator", "JoinableQueue", "Pool",
           "TimeoutError"]

"""The joblib backend: joblib's pool-based backend machinery on purerun's ``Pool``.

joblib's own multiprocessing backend keeps a ``multiprocessing.Pool`` and sends it each
batch of calls with ``apply_async``; this backend does the same with
:class:`purerun.util.multiprocessing.Pool`, so the batches run in purerun actors (on every
node of a cluster). Ray's backend gets there by swapping the base class of joblib's pool at
run time; here the backend builds our pool itself, which leaves joblib untouched.

Large arguments. A scikit-learn style loop passes the same big arrays to every call
(``delayed(fit)(X, y, params) for params in grid``). Each argument of at least
``STORE_THRESHOLD_BYTES`` is put in the object store once per ``Parallel`` run and the
calls carry its reference, so the array crosses into shared memory once, not once per
batch; the workers read it zero-copy, read-only (as joblib's default memory-mapping does).
"""

from joblib._parallel_backends import (AutoBatchingMixin, FallbackToBackend,
                                       ParallelBackendBase, PoolManagerMixin,
                                       SequentialBackend)
from joblib.parallel import BatchedCalls

import purerun
from purerun.object_ref import ObjectRef

from ..multiprocessing import Pool

__all__ = ["PurerunBackend", "STORE_THRESHOLD_BYTES"]

# Arguments at least this big go to the object store once per Parallel run instead of
# travelling with every batch: the size where purerun stops sending values inline anyway.
STORE_THRESHOLD_BYTES = 100 * 1024


def _nbytes(value):
    nbytes = getattr(value, "nbytes", None)  # numpy arrays, memoryviews
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    return 0


class _StoredArgument:
    """Stands for an argument put in the object store; the worker swaps the value back."""

    __slots__ = ("ref",)

    def __init__(self, ref: ObjectRef):
        self.ref = ref


class _CallWithStoredArguments:
    """A joblib batch whose big arguments are references, fetched in the worker."""

    def __init__(self, batch: BatchedCalls):
        self.batch = batch

    def __call__(self):
        refs = {}
        for _func, args, kwargs in self.batch.items:
            for value in list(args) + list(kwargs.values()):
                if isinstance(value, _StoredArgument):
                    refs[value.ref] = None
        if refs:
            values = dict(zip(refs, purerun.get(list(refs))))
            self.batch.items = [
                (func,
                 tuple(values[a.ref] if isinstance(a, _StoredArgument) else a for a in args),
                 {k: values[v.ref] if isinstance(v, _StoredArgument) else v
                  for k, v in kwargs.items()})
                for func, args, kwargs in self.batch.items
            ]
        return self.batch()


class PurerunBackend(PoolManagerMixin, AutoBatchingMixin, ParallelBackendBase):
    """joblib's ``Parallel`` on a :class:`purerun.util.multiprocessing.Pool`.

    Registered as "ray" by :func:`purerun.util.joblib.register_ray` and as "purerun" by
    :func:`purerun.util.joblib.register_purerun`. Starts purerun if it is not running.

    Args:
        nesting_level: Set by joblib for nested ``Parallel`` calls.
        inner_max_num_threads: Accepted for joblib's API; not applied.
        ray_remote_args: Actor options for the pool's workers, e.g. ``{"num_cpus": 1}``
            (also accepted by ``configure``, i.e. as a ``Parallel`` backend argument).
        **kwargs: Passed on to joblib's backend base.
    """

    supports_retrieve_callback = True
    supports_return_generator = True

    def __init__(self, nesting_level=None, inner_max_num_threads=None, ray_remote_args=None,
                 **kwargs):
        self.ray_remote_args = ray_remote_args
        self._stored = {}  # id(argument) -> (argument, its ObjectRef), for one Parallel run
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads, **kwargs)

    @staticmethod
    def _cluster_cpus():
        if not purerun.is_initialized():
            purerun.init()
        return int(purerun.cluster_resources().get("CPU", 1))

    def effective_n_jobs(self, n_jobs):
        """The number of workers ``n_jobs`` means: negative counts from the cluster's CPUs
        (-1: all of them), as joblib does with the machine's."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(self._cluster_cpus() + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None,
                  ray_remote_args=None, **memmapping_kwargs):
        """Start the pool for one ``Parallel`` run; joblib's memory-mapping options
        (``max_nbytes``, ``mmap_mode``, ``temp_folder``, ...) have no meaning here and are
        ignored."""
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self._pool = Pool(n_jobs, ray_remote_args=ray_remote_args or self.ray_remote_args)
        self.parallel = parallel
        return n_jobs

    def submit(self, func, callback=None):
        """Send one joblib batch to the pool, its big arguments by reference."""
        if isinstance(func, BatchedCalls):
            func = self._store_big_arguments(func)
        return super().submit(func, callback=callback)

    def _store_big_arguments(self, batch):
        stored_any = False
        items = []
        for func, args, kwargs in batch.items:
            args = tuple(self._maybe_store(a) for a in args)
            kwargs = {k: self._maybe_store(v) for k, v in kwargs.items()}
            stored_any = stored_any or any(
                isinstance(v, _StoredArgument) for v in args + tuple(kwargs.values()))
            items.append((func, args, kwargs))
        if not stored_any:
            return batch
        batch.items = items
        return _CallWithStoredArguments(batch)

    def _maybe_store(self, value):
        if _nbytes(value) < STORE_THRESHOLD_BYTES:
            return value
        entry = self._stored.get(id(value))
        if entry is None or entry[0] is not value:
            # The value is held with its ref, so its id cannot be reused for another object
            # during this run.
            entry = self._stored[id(value)] = (value, purerun.put(value))
        return _StoredArgument(entry[1])

    def terminate(self):
        """Stop the pool at the end of a ``Parallel`` run and drop its stored arguments."""
        super().terminate()
        self._stored.clear()
        self.reset_batch_stats()

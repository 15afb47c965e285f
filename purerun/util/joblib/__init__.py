"""A joblib backend running ``joblib.Parallel`` on purerun (Ray's ``ray.util.joblib``).

::

    import joblib
    from purerun.util.joblib import register_ray

    register_ray()
    with joblib.parallel_backend("ray"):
        results = joblib.Parallel(n_jobs=-1)(joblib.delayed(f)(x) for x in data)

joblib is needed only by whoever registers the backend; purerun itself does not import it.
"""

__all__ = ["register_purerun", "register_ray"]


def _register(name):
    try:
        from joblib import register_parallel_backend
    except ImportError:
        raise ImportError(
            f"The {name!r} joblib backend needs joblib: pip install joblib") from None
    from .backend import PurerunBackend
    register_parallel_backend(name, PurerunBackend)


def register_ray():
    """Register the backend under Ray's name, for ``joblib.parallel_backend("ray")``.

    Raises:
        ImportError: joblib is not installed.
    """
    _register("ray")


def register_purerun():
    """Register the backend as ``"purerun"``, for ``joblib.parallel_backend("purerun")``.

    Raises:
        ImportError: joblib is not installed.
    """
    _register("purerun")

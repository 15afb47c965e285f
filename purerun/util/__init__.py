"""purerun.util: utilities on top of the core API, under Ray's names (``ray.util``)."""

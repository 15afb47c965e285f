"""Application metrics: ``Counter``, ``Gauge`` and ``Histogram``, as ``ray.util.metrics``.

A metric is declared with a name, a description and the keys of its tags; each distinct
set of tag values is one series. Recording goes to a registry in the recording process
(driver, task worker or actor), one per process and shared by every metric object of one
name there; ``snapshot()`` returns every series of this process, for a collector (a state
API, an exporter) to gather.

Metric objects pickle by their definition (name, description, tag keys, boundaries,
default tags): one made in the driver and used in a task records into the task's
process. Nothing is sent anywhere by recording; a process's series go when it exits.
"""

import bisect
import re
import threading
import warnings

__all__ = ["Counter", "Gauge", "Histogram", "Metric", "snapshot"]

# Prometheus' rule for metric names: what an exporter can publish.
_VALID_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"


class _Registry:
    """This process's series: name -> _Family. Thread-safe (threaded actors record too)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.families = {}

    def family(self, name, kind, description, boundaries=None):
        with self.lock:
            family = self.families.get(name)
            if family is None:
                family = self.families[name] = _Family(name, kind, description, boundaries)
            elif family.kind != kind:
                raise ValueError(f"A {family.kind} named {name!r} already exists in this "
                                 f"process; a {kind} cannot have the same name.")
            elif kind == HISTOGRAM and family.boundaries != boundaries:
                raise ValueError(f"A histogram named {name!r} already exists in this "
                                 f"process with boundaries {family.boundaries}; another "
                                 f"with boundaries {boundaries} cannot share its series.")
            return family

    def snapshot(self):
        with self.lock:
            return [series for family in self.families.values()
                    for series in family.snapshot()]


class _Family:
    """One metric name's series: frozen tag items -> value (histograms: bucket counts)."""

    def __init__(self, name, kind, description, boundaries):
        self.name = name
        self.kind = kind
        self.description = description
        self.boundaries = boundaries
        self.series = {}

    def record(self, tags, value):
        # Called with the registry's lock held.
        key = tuple(sorted(tags.items()))
        if self.kind == COUNTER:
            self.series[key] = self.series.get(key, 0.0) + value
        elif self.kind == GAUGE:
            self.series[key] = float(value)
        else:
            state = self.series.get(key)
            if state is None:
                state = self.series[key] = _HistogramState(len(self.boundaries) + 1)
            state.observe(bisect.bisect_right(self.boundaries, value), value)

    def snapshot(self):
        out = []
        for key, value in self.series.items():
            series = {"name": self.name, "kind": self.kind, "description": self.description,
                      "tags": dict(key)}
            if self.kind == HISTOGRAM:
                series.update(boundaries=list(self.boundaries),
                              bucket_counts=list(value.bucket_counts), count=value.count,
                              sum=value.sum)
            else:
                series["value"] = value
            out.append(series)
        return out


class _HistogramState:
    __slots__ = ("bucket_counts", "count", "sum")

    def __init__(self, buckets):
        self.bucket_counts = [0] * buckets
        self.count = 0
        self.sum = 0.0

    def observe(self, bucket, value):
        self.bucket_counts[bucket] += 1
        self.count += 1
        self.sum += value


_registry = _Registry()


def snapshot():
    """Every series recorded in this process so far.

    Returns:
        A list with one dict per series (a metric name and one set of tag values):

        * ``name``, ``kind`` (``"counter"``, ``"gauge"`` or ``"histogram"``),
          ``description``, ``tags`` (``{tag key: value}``);
        * counters and gauges: ``value`` (a counter's total, a gauge's last value);
        * histograms: ``boundaries``, ``bucket_counts`` (``len(boundaries) + 1`` counts:
          bucket ``i`` holds the values ``v`` with ``boundaries[i-1] <= v <
          boundaries[i]``, the first from minus infinity, the last to plus infinity),
          ``count`` and ``sum`` of the values observed.

        The dicts are copies: changing them changes nothing.
    """
    return _registry.snapshot()


class Metric:
    """What every metric shares: its name, description, tag keys and default tags.

    Args:
        name: the metric's name: letters, digits, ``_`` and ``:``, not starting with a
            digit. A name breaking that rule gets a warning and the metric records
            nothing (it could not be exported), as in Ray.
        description: what it measures.
        tag_keys: the names of its tags, a tuple of str. Every recording must give each
            a value (in its ``tags`` or through ``set_default_tags``).

    Raises:
        ValueError: ``name`` is empty.
        TypeError: ``name`` is not a str, ``tag_keys`` not a tuple, or a key not a str.
    """

    _kind = None

    def __init__(self, name, description="", tag_keys=None):
        if not isinstance(name, str):
            raise TypeError(f"The metric name must be a str, got {type(name).__name__}")
        if not name:
            raise ValueError("Empty name is not allowed. Please provide a metric name.")
        self._discard = not _VALID_NAME.match(name)
        if self._discard:
            warnings.warn(f"Invalid metric name: {name}. Metric will be discarded and data "
                          "will not be collected or published. Metric names can only "
                          "contain letters, numbers, _, and :. Metric names cannot start "
                          "with numbers.", UserWarning, stacklevel=3)
        tag_keys = tag_keys or ()
        if not isinstance(tag_keys, tuple):
            raise TypeError(f"tag_keys should be a tuple type, got: {type(tag_keys)}")
        for key in tag_keys:
            if not isinstance(key, str):
                raise TypeError(f"Tag keys must be str, got {type(key)}.")
        if not isinstance(description, str):
            raise TypeError(f"description must be a str, got {type(description).__name__}")
        self._name = name
        self._description = description
        self._tag_keys = tag_keys
        self._default_tags = {}

    def _register(self, boundaries=None):
        self._family = None if self._discard else _registry.family(
            self._name, self._kind, self._description, boundaries)

    def set_default_tags(self, default_tags):
        """Set tag values used by every recording that does not give its own.

        Args:
            default_tags: ``{tag key: value}``; each key must be one of ``tag_keys`` and
                each value a str.

        Returns:
            This metric, so that ``Counter("n", tag_keys=("a",)).set_default_tags(...)``
            works.

        Raises:
            ValueError: a key is not one of the metric's tag keys.
            TypeError: a value is not a str.
        """
        if not isinstance(default_tags, dict):
            raise TypeError(f"default_tags must be a dict, got {type(default_tags).__name__}")
        for key, value in default_tags.items():
            if key not in self._tag_keys:
                raise ValueError(f"Unrecognized tag key {key}.")
            if not isinstance(value, str):
                raise TypeError(f"Tag values must be str, got {type(value)}.")
        self._default_tags = dict(default_tags)
        return self

    def _record(self, value, tags):
        if self._family is None:  # an invalid name: recorded nowhere, checked no further
            return
        final = self._final_tags(tags)
        with _registry.lock:
            self._family.record(final, value)

    def _final_tags(self, tags):
        if tags:
            if not isinstance(tags, dict):
                raise TypeError(f"tags must be a dict, got {type(tags).__name__}")
            for key, value in tags.items():
                if key not in self._tag_keys:
                    raise ValueError(f"Unrecognized tag key {key} (the metric's tag keys "
                                     f"are {self._tag_keys}).")
                if not isinstance(value, str):
                    raise TypeError(f"Tag values must be str, got {type(value)}.")
            final = {**self._default_tags, **tags}
        else:
            final = self._default_tags
        missing = [key for key in self._tag_keys if key not in final]
        if missing:
            raise ValueError(f"Missing value for tag key(s): {','.join(missing)}.")
        return final

    @property
    def info(self):
        """The metric's definition: name, description, tag_keys, default_tags."""
        return {"name": self._name, "description": self._description,
                "tag_keys": self._tag_keys, "default_tags": dict(self._default_tags)}

    def __reduce__(self):
        return _rebuild, (type(self), self._definition(), self._default_tags)

    def _definition(self):
        return (self._name, self._description, self._tag_keys)


def _rebuild(cls, definition, default_tags):
    metric = cls(*definition)
    if default_tags:
        metric.set_default_tags(default_tags)
    return metric


def _check_value(value):
    if not isinstance(value, (int, float)):
        raise TypeError(f"value must be int or float, got {type(value)}.")


class Counter(Metric):
    """A total that only goes up: requests served, bytes sent.

    Args:
        name, description, tag_keys: as ``Metric``.
    """

    _kind = COUNTER

    def __init__(self, name, description="", tag_keys=None):
        super().__init__(name, description, tag_keys)
        self._register()

    def inc(self, value=1.0, tags=None):
        """Add ``value`` to the counter.

        Args:
            value: a positive int or float (default 1).
            tags: tag values for this recording, over the default ones.

        Raises:
            TypeError: ``value`` is not a number, or a tag value not a str.
            ValueError: ``value`` is not positive, a tag key is unknown, or a tag key has
                no value.
        """
        _check_value(value)
        if value <= 0:
            raise ValueError(f"value must be >0, got {value}")
        self._record(value, tags)


class Gauge(Metric):
    """A value that goes up and down: queue length, memory in use. Keeps the last one set.

    Args:
        name, description, tag_keys: as ``Metric``.
    """

    _kind = GAUGE

    def __init__(self, name, description="", tag_keys=None):
        super().__init__(name, description, tag_keys)
        self._register()

    def set(self, value, tags=None):
        """Set the gauge to ``value``.

        Args:
            value: an int or float; None does nothing.
            tags: tag values for this recording, over the default ones.

        Raises:
            TypeError: ``value`` is not a number, or a tag value not a str.
            ValueError: a tag key is unknown, or a tag key has no value.
        """
        if value is None:
            return
        _check_value(value)
        self._record(value, tags)


class Histogram(Metric):
    """How recorded values are spread over buckets: latencies, sizes.

    Args:
        name, description, tag_keys: as ``Metric``.
        boundaries: the buckets' upper bounds: positive and strictly increasing. A value
            ``v`` falls in the first bucket whose bound is above it (``v < bound``), or in
            a last bucket past every bound.

    Raises:
        ValueError: ``boundaries`` is missing or empty, holds a value <= 0, or is not
            strictly increasing.
        TypeError: a boundary is not a number.
    """

    _kind = HISTOGRAM

    def __init__(self, name, description="", boundaries=None, tag_keys=None):
        super().__init__(name, description, tag_keys)
        if boundaries is None or len(boundaries) == 0:
            raise ValueError("boundaries argument should be provided when using the "
                             "Histogram class. e.g., Histogram(\"name\", "
                             "boundaries=[1.0, 2.0])")
        boundaries = list(boundaries)
        for i, boundary in enumerate(boundaries):
            if isinstance(boundary, bool) or not isinstance(boundary, (int, float)):
                raise TypeError(f"Invalid `boundaries` argument at index {i}, {boundaries}: "
                                f"boundaries must be numbers, got {type(boundary).__name__}")
            if boundary <= 0:
                raise ValueError(f"Invalid `boundaries` argument at index {i}, "
                                 f"{boundaries}. Use positive values for the arguments.")
            if i and boundary <= boundaries[i - 1]:
                raise ValueError(f"Invalid `boundaries` argument at index {i}, "
                                 f"{boundaries}. Boundaries must be strictly increasing.")
        self.boundaries = boundaries
        self._register(boundaries)

    def observe(self, value, tags=None):
        """Record one value in its bucket.

        Args:
            value: an int or float.
            tags: tag values for this recording, over the default ones.

        Raises:
            TypeError: ``value`` is not a number, or a tag value not a str.
            ValueError: a tag key is unknown, or a tag key has no value.
        """
        _check_value(value)
        self._record(value, tags)

    @property
    def info(self):
        """The metric's definition, with its boundaries."""
        info = super().info
        info["boundaries"] = self.boundaries
        return info

    def _definition(self):
        return (self._name, self._description, self.boundaries, self._tag_keys)

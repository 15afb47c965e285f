"""put/get/wait: values round-trip, wait's num_returns and timeout, get's timeout."""

import time

import ray


@ray.remote
def slow(x, seconds):
    time.sleep(seconds)
    return x


def main():
    ray.init(num_cpus=2)
    values = [1, "two", [3.0], {"four": 4}, None, (5, 6), b"seven", {8, 9}]
    refs = [ray.put(v) for v in values]
    print("round trip:", ray.get(refs) == values)
    print("ref type:", type(refs[0]).__name__)
    print("put of a list of refs keeps refs:", [type(r).__name__ for r in ray.get(ray.put(refs[:2]))])

    fast = [slow.remote(i, 0) for i in range(3)]
    late = slow.remote("late", 30)
    ready, pending = ray.wait(fast + [late], num_returns=3, timeout=20)
    print("wait num_returns=3:", len(ready), len(pending), sorted(ray.get(ready)))
    ready, pending = ray.wait([late], timeout=0.1)
    print("wait timeout:", len(ready), len(pending))
    ready, pending = ray.wait(fast, num_returns=len(fast))
    print("wait all ready:", len(ready), len(pending))
    print("ready keeps input order:", ready == fast)
    ready, pending = ray.wait(fast, num_returns=2, fetch_local=False)
    print("fetch_local=False:", len(ready))
    try:
        ray.get(late, timeout=0.1)
    except ray.exceptions.GetTimeoutError as e:
        print("get timeout:", type(e).__name__, isinstance(e, TimeoutError))
    ray.cancel(late, force=True)
    for bad in (lambda: ray.wait(fast, num_returns=5), lambda: ray.wait(fast + fast),
                lambda: ray.wait(fast, num_returns=0)):
        try:
            bad()
            print("accepted")
        except ValueError:
            print("ValueError")
    try:
        ray.wait(fast[0])
    except (TypeError, ValueError) as e:
        print("wait on one ref:", type(e).__name__)
    try:
        ray.get("not a ref")
    except (TypeError, ValueError) as e:
        print("get of a str:", type(e).__name__)
    try:
        ray.put(refs[0])
    except (TypeError, ValueError) as e:
        print("put of a ref:", type(e).__name__)
    print("get of empty list:", ray.get([]))
    ray.shutdown()


if __name__ == "__main__":
    main()

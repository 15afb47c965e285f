"""Task errors: raised as RayTaskError and as the original type, with the cause attached."""

import ray


class InsufficientFunds(Exception):
    def __init__(self, needed):
        super().__init__(f"need {needed} more")
        self.needed = needed


@ray.remote
def withdraw(amount):
    if amount > 10:
        raise InsufficientFunds(amount - 10)
    return 10 - amount


@ray.remote
def divide(a, b):
    return a / b


@ray.remote
def consume(x):
    return x + 1


@ray.remote
def nested():
    return ray.get(divide.remote(1, 0))


def main():
    ray.init(num_cpus=2)
    try:
        ray.get(divide.remote(1, 0))
    except ZeroDivisionError as e:
        print("caught as ZeroDivisionError:", isinstance(e, ray.exceptions.RayTaskError))
        print("cause:", type(e.cause).__name__, e.cause)
        print("message in str:", "division by zero" in str(e))
        print("function name in str:", "divide" in str(e))
    try:
        ray.get(withdraw.remote(15))
    except ray.exceptions.RayTaskError as e:
        print("custom error:", isinstance(e, InsufficientFunds), type(e.cause).__name__,
              e.cause.needed, e.cause.args)
    try:
        ray.get(consume.remote(divide.remote(1, 0)))
    except ZeroDivisionError as e:
        print("failed argument:", type(e.cause).__name__)
    try:
        ray.get(nested.remote())
    except ZeroDivisionError as e:
        print("nested failure:", type(e).__name__.startswith("RayTaskError"),
              type(e.cause).__name__)
    ref = divide.remote(1, 0)
    ready, _ = ray.wait([ref])
    print("a failed task is ready:", len(ready))
    print("as_instanceof_cause:", isinstance(ray.exceptions.RayTaskError(
        "f", "tb", ValueError("v")).as_instanceof_cause(), ValueError))
    ray.shutdown()


if __name__ == "__main__":
    main()

"""Actor errors: a method's error leaves the actor alive; a dead actor raises ActorDiedError."""

import time

import ray


@ray.remote
class Account:
    def __init__(self):
        self.balance = 0

    def deposit(self, amount):
        if amount <= 0:
            raise ValueError("deposit must be positive")
        self.balance += amount
        return self.balance


def call_until_dead(account, timeout=60):
    """ray.kill returns before the actor is gone: a call made just after may still run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(account.deposit.remote(1))
        except ray.exceptions.ActorDiedError as e:
            return e
        time.sleep(0.05)
    raise AssertionError("the killed actor still answers")


def main():
    ray.init(num_cpus=2)
    account = Account.remote()
    ray.get(account.deposit.remote(5))
    try:
        ray.get(account.deposit.remote(-1))
    except ValueError as e:
        print("method error:", type(e.cause).__name__, e.cause,
              isinstance(e, ray.exceptions.RayTaskError))
    print("still alive:", ray.get(account.deposit.remote(1)))
    ray.kill(account)
    e = call_until_dead(account)
    print("after kill:", type(e).__name__, isinstance(e, ray.exceptions.RayActorError),
          isinstance(e, ray.exceptions.RayError))
    print("ActorDiedError is RayActorError:",
          issubclass(ray.exceptions.ActorDiedError, ray.exceptions.RayActorError))
    ray.shutdown()


if __name__ == "__main__":
    main()

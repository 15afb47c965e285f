"""Threaded actors: max_concurrency > 1 runs calls on a thread pool at the same time."""

import threading

import ray


@ray.remote
class Meeting:
    def __init__(self, parties):
        self.barrier = threading.Barrier(parties, timeout=30)
        self.lock = threading.Lock()
        self.count = 0

    def meet(self, i):
        self.barrier.wait()          # passes only if `parties` calls run at once
        with self.lock:
            self.count += 1
        return i

    def total(self):
        return self.count


def main():
    ray.init(num_cpus=2)
    meeting = Meeting.options(max_concurrency=4).remote(4)
    print("met:", sorted(ray.get([meeting.meet.remote(i) for i in range(8)])))
    print("count:", ray.get(meeting.total.remote()))
    ray.shutdown()


if __name__ == "__main__":
    main()

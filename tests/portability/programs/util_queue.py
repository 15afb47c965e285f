"""ray.util.queue.Queue: shared by tasks and actors, Empty and Full, batches."""

import ray
from ray.util.queue import Empty, Full, Queue


@ray.remote
def producer(queue, items):
    for item in items:
        queue.put(item)
    return len(items)


@ray.remote
def consumer(queue, n):
    return [queue.get(timeout=30) for _ in range(n)]


def main():
    ray.init(num_cpus=2)
    queue = Queue()
    print("empty:", queue.empty(), queue.size(), len(queue))
    ray.get([producer.remote(queue, range(i * 5, i * 5 + 5)) for i in range(2)])
    print("size after producers:", queue.qsize())
    print("consumed:", sorted(ray.get(consumer.remote(queue, 10))))
    try:
        queue.get(block=False)
    except Empty:
        print("get_nowait on empty: Empty")
    try:
        queue.get(timeout=0.1)
    except Empty:
        print("get with timeout: Empty")
    bounded = Queue(maxsize=2)
    bounded.put_nowait("a")
    bounded.put("b")
    print("full:", bounded.full())
    try:
        bounded.put_nowait("c")
    except Full:
        print("put_nowait on full: Full")
    try:
        bounded.put("c", timeout=0.1)
    except Full:
        print("put with timeout: Full")
    print("FIFO:", bounded.get(), bounded.get_nowait())
    queue.put_nowait_batch([1, 2, 3])
    print("batch:", queue.get_nowait_batch(3))
    try:
        queue.get(timeout=-1)
    except ValueError:
        print("negative timeout: ValueError")
    queue.shutdown()
    bounded.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()

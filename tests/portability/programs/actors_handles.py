"""Actor handles: passed to other actors, returned from tasks, calls from many callers."""

import ray


@ray.remote
class Store:
    def __init__(self):
        self.items = {}

    def set(self, key, value):
        self.items[key] = value

    def get_all(self):
        return dict(sorted(self.items.items()))


@ray.remote
class Writer:
    def __init__(self, store, prefix):
        self.store = store
        self.prefix = prefix

    def write(self, n):
        ray.get([self.store.set.remote(f"{self.prefix}{i}", i) for i in range(n)])
        return n


@ray.remote
def make_store():
    store = Store.remote()
    ray.get(store.set.remote("made-in-task", 1))
    return store


def main():
    ray.init(num_cpus=2)
    store = Store.remote()
    writers = [Writer.remote(store, p) for p in "ab"]
    print("written:", ray.get([w.write.remote(2) for w in writers]))
    print("store:", ray.get(store.get_all.remote()))
    other = ray.get(make_store.remote())
    print("handle returned from a task:", ray.get(other.get_all.remote()))
    print("handles compare by actor:", ray.put(store) is not None and
          ray.get(ray.put(store)).get_all.remote() is not None)
    ray.shutdown()


if __name__ == "__main__":
    main()

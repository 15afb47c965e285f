"""Named actors: get_actor, namespaces, get_if_exists, detached lifetime."""

import ray


@ray.remote
class Registry:
    def __init__(self, tag):
        self.tag = tag

    def get_tag(self):
        return self.tag


def main():
    ray.init(num_cpus=2, namespace="shop")
    first = Registry.options(name="registry").remote("first")
    print("by name:", ray.get(ray.get_actor("registry").get_tag.remote()))
    try:
        Registry.options(name="registry").remote("second")
    except ValueError:
        print("same name twice: ValueError")
    again = Registry.options(name="registry", get_if_exists=True).remote("third")
    print("get_if_exists:", ray.get(again.get_tag.remote()))
    try:
        ray.get_actor("missing")
    except ValueError:
        print("missing name: ValueError")
    other = Registry.options(name="registry", namespace="elsewhere").remote("other ns")
    print("other namespace:", ray.get(ray.get_actor("registry", namespace="elsewhere")
                                      .get_tag.remote()))
    print("this namespace still:", ray.get(ray.get_actor("registry").get_tag.remote()))
    print("runtime namespace:", ray.get_runtime_context().namespace)
    detached = Registry.options(name="keeper", lifetime="detached").remote("detached")
    print("detached:", ray.get(ray.get_actor("keeper").get_tag.remote()))
    ray.kill(detached)
    ray.kill(first)
    ray.kill(other)
    try:
        Registry.options(lifetime="forever")
    except ValueError:
        print("bad lifetime: ValueError")
    ray.shutdown()


if __name__ == "__main__":
    main()

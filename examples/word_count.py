"""Parallel word count over generated text files: map tasks, then a tree of merge tasks.

Run: python examples/word_count.py [num_files]. The files are generated in a temporary
directory, counted by one task each, and the partial counts are merged pairwise by tasks
that take the previous tasks' ObjectRefs as arguments (no data passes through the driver).
"""

import collections
import os
import random
import sys
import tempfile

import purerun as ray

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron "
         "pi rho sigma tau upsilon phi chi psi omega").split()


@ray.remote
def count_file(path):
    counts = collections.Counter()
    with open(path) as f:
        for line in f:
            counts.update(line.split())
    return counts


@ray.remote
def merge(a, b):
    return a + b


def make_files(directory, num_files, words_per_file=50_000):
    rng = random.Random(7)
    expected = collections.Counter()
    paths = []
    for i in range(num_files):
        words = rng.choices(WORDS, k=words_per_file)
        expected.update(words)
        path = os.path.join(directory, f"part-{i:03d}.txt")
        with open(path, "w") as f:
            for start in range(0, len(words), 20):
                f.write(" ".join(words[start:start + 20]) + "\n")
        paths.append(path)
    return paths, expected


def main(num_files=16):
    with tempfile.TemporaryDirectory() as directory:
        paths, expected = make_files(directory, num_files)
        ray.init()
        partial = [count_file.remote(p) for p in paths]
        while len(partial) > 1:  # merge pairwise: a tree of tasks
            partial = [merge.remote(partial[i], partial[i + 1]) if i + 1 < len(partial)
                       else partial[i] for i in range(0, len(partial), 2)]
        total = ray.get(partial[0])
        ray.shutdown()
    assert total == expected, "parallel count differs from the sequential one"
    for word, n in total.most_common(5):
        print(f"{word:>8} {n}")
    print(f"{sum(total.values()):,} words in {num_files} files: counts match.")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 16)

"""A driver for test_output.py that leaves as soon as its tasks are done: what they printed
must still reach its stdout and stderr.

Usage: python exit_output_driver.py shutdown|atexit

Tasks print a line and a line to stderr; an actor's method prints too; then a last task
prints a line with no newline at its end. The driver gets their results, prints ``GOT`` and
ends: with purerun.shutdown() (``shutdown``), or by falling off the end of the script
(``atexit``).
"""

import sys

import purerun


@purerun.remote
def prints(tag):
    print(f"line from {tag}")
    print(f"complaint from {tag}", file=sys.stderr)
    return tag


@purerun.remote
def prints_without_newline():
    print("unfinished line from the last task", end="")


@purerun.remote
class Talker:
    def say(self, tag):
        print(f"line from {tag}")
        return tag


def main(how):
    purerun.init(num_cpus=1)
    talker = Talker.remote()
    purerun.get([prints.remote("task-1"), prints.remote("task-2"),
                 talker.say.remote("actor")])
    purerun.get(prints_without_newline.remote())
    # One write: task output is relayed by another thread meanwhile, and print() writes
    # the text and its newline apart.
    sys.stdout.write("GOT\n")
    sys.stdout.flush()
    if how == "shutdown":
        purerun.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])

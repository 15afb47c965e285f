"""Task graphs, as Ray's ``ray.dag``: build with ``.bind(...)``, run with ``.execute(...)``.

.. code-block:: python

    from purerun.dag import InputNode, MultiOutputNode

    with InputNode() as inp:
        a = double.bind(inp)
        counter = Counter.bind()
        dag = MultiOutputNode([a, counter.add.bind(a)])
    purerun.get(dag.execute(3))

Building runs nothing. ``execute`` submits every node, children first, each once, on the
ordinary task and actor path, passing results from node to node as ObjectRefs.
"""

from purerun.dag.class_node import ClassMethodNode, ClassNode
from purerun.dag.dag_node import DAGNode
from purerun.dag.function_node import FunctionNode
from purerun.dag.input_node import DAGInputData, InputAttributeNode, InputNode
from purerun.dag.output_node import MultiOutputNode

__all__ = ["ClassMethodNode", "ClassNode", "DAGInputData", "DAGNode", "FunctionNode",
           "InputAttributeNode", "InputNode", "MultiOutputNode"]

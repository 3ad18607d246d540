"""The node agent: one per institution, outbound connections only.

Programmatic use::

    from consortia.node import NodeAgent, NodeConfig, DatasetConfig, NodeProcess, load_config

* :class:`NodeConfig` / :func:`load_config`: the node's one TOML file;
* :class:`NodeAgent`: enrol, publish the catalogue, long-poll and answer tasks;
* :class:`NodeProcess`: run an agent as a child process (demo, benchmarks, tests).
"""

from consortia.node.agent import NodeAgent
from consortia.node.config import DatasetConfig, NodeConfig, load_config
from consortia.node.identity import fingerprint
from consortia.node.process import NodeProcess

__all__ = [
    "DatasetConfig",
    "NodeAgent",
    "NodeConfig",
    "NodeProcess",
    "fingerprint",
    "load_config",
]

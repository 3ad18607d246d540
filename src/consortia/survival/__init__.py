"""Federated survival analysis: Kaplan-Meier, log-rank, Cox, concordance.

Algorithms in this package register themselves on import; the registry imports
every public submodule, so adding a module is enough to make its algorithms
available by name.
"""

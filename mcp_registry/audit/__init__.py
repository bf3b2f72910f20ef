"""The audit: what the registry recorded over a window (`mcp-registry audit`, and the demo's report).

`run` reads the registry (through `registry.reader`) with the deployment's settings and prints the
report; `tables` renders it for a terminal; `worker_groups` folds the worker table by host.
"""

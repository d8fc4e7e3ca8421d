"""The project's import graph in numbers: modules per folder, import cycles and the longest import chain.

    .venv/bin/python bench/import_graph.py            # this checkout
    git worktree add /tmp/old <commit> && (cd /tmp/old && /path/to/.venv/bin/python /path/to/bench/import_graph.py)

Counts every import of a project module, at module level or inside a function (grimp, which
import-linter is built on), leaving out imports under `if TYPE_CHECKING:` (they never run). A cycle is a
strongly connected group of modules; the longest chain is the longest path through the graph once each
such group is one node. Not a timing: the numbers are exact and the same on every machine.
"""

from __future__ import annotations

import collections
import os
import sys

import grimp
import networkx as nx

sys.path.insert(0, os.getcwd())
PACKAGES = ("engine", "store", "pages")

graph = grimp.build_graph(*PACKAGES, include_external_packages=False, exclude_type_checking_imports=True)
g = nx.DiGraph()
for module in graph.modules:
    g.add_node(module)
    for imported in graph.find_modules_directly_imported_by(module):
        g.add_edge(module, imported)

folders = collections.Counter(m.rsplit(".", 1)[0] if graph.find_children(m) == set() else m for m in graph.modules)
print(f"modules: {len(graph.modules)}")
for folder, n in sorted(folders.items()):
    print(f"  {folder:32s} {n}")
condensed = nx.condensation(g)
cycles = [sorted(condensed.nodes[n]["members"]) for n in condensed.nodes if len(condensed.nodes[n]["members"]) > 1]
print(f"import cycles: {len(cycles)}")
for members in cycles:
    print("  " + ", ".join(members))
path = nx.dag_longest_path(condensed)
print(f"longest import chain: {len(path)} modules")
print("  " + " -> ".join(sorted(condensed.nodes[n]["members"])[0] for n in path))

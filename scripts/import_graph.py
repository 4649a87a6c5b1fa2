"""Import graph (scripts/import_graph.py) of the project's packages: cycles (strongly connected components), imports inside
functions, files per folder."""
import ast, sys, os
from collections import defaultdict
from pathlib import Path
root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
PKGS = ("protocol", "store", "trainer", "ralph", "node")
mods = {}
for pkg in PKGS:
    for p in (root / pkg).rglob("*.py"):
        rel = p.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
def resolve(mod, node, is_pkg):
    if node.level:
        base = mod.split(".")
        if not is_pkg: base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        name = ".".join(base + ([node.module] if node.module else []))
    else:
        name = node.module
    return name
edges = defaultdict(set); inner = defaultdict(int)
for mod, p in mods.items():
    tree = ast.parse(p.read_text())
    is_pkg = p.name == "__init__.py"
    def visit(n, depth):
        for c in ast.iter_child_nodes(n):
            d = depth + isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(c, ast.ImportFrom):
                name = resolve(mod, c, is_pkg)
                subs = [f"{name}.{a.name}" for a in c.names if f"{name}.{a.name}" in mods]
                targets = subs or [name]  # "from pkg import module" is an edge to the module only
            elif isinstance(c, ast.Import):
                targets = [a.name for a in c.names]
            elif (isinstance(c, ast.Call) and getattr(c.func, "attr", "") == "import_module" and c.args
                  and isinstance(c.args[0], ast.JoinedStr)):
                prefix = "".join(v.value for v in c.args[0].values if isinstance(v, ast.Constant))
                for m in mods:
                    if m.startswith(prefix) and m != mod:
                        edges[mod].add(m)
                visit(c, d); continue
            else:
                visit(c, d); continue
            if depth:
                inner[mod] += 1
            hit = [t for t in targets if t in mods]
            if hit:
                # TYPE_CHECKING-only imports are not runtime edges
                for t in hit:
                    if t != mod: edges[mod].add(t)
            visit(c, d)
    visit(tree, 0)
# drop TYPE_CHECKING blocks: approximate by re-parse
def tarjan(nodes):
    index, low, st, on, out, i = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)
    def sc(v):
        index[v] = low[v] = i[0]; i[0] += 1; st.append(v); on.add(v)
        for w in edges[v]:
            if w not in index: sc(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = st.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    for v in nodes:
        if v not in index: sc(v)
    return out
cycles = tarjan(list(mods))
print("modules:", len(mods))
print("cycles (strongly connected groups):", len(cycles))
for c in cycles: print("  ", " <-> ".join(c))
print("imports inside functions:", sum(inner.values()), " node/:", sum(v for k, v in inner.items() if k.startswith("node")))
folders = defaultdict(int)
for p in mods.values(): folders[str(p.parent.relative_to(root))] += 1
print("files per folder:", dict(sorted(folders.items())))

#!/usr/bin/env python3
"""File-level import graph of a Rust crate: which source file uses an item of
which other file, and the import cycles among them.

    scripts/modgraph.py [SRC_DIR] [--edges] [--dot]

Paths are read from `use` declarations and from inline `crate::`/`super::`/
`self::` paths; an item is traced through `pub use` re-exports to the file
that defines it. `mod` declarations are not imports. Text-based, so macros and
inline modules are only approximated.
"""
import os
import re
import sys
from collections import defaultdict

ITEM = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:unsafe\s+|async\s+|const\s+|extern\s+\"C\"\s+)*"
    r"(?:struct|enum|trait|type|fn|const|static|union|macro_rules!)\s+([A-Za-z_][A-Za-z0-9_]*)",
    re.M)
MOD = re.compile(r"^\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", re.M)
USE = re.compile(r"^\s*(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.M)
INLINE = re.compile(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def strip(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def expand(tree):
    """`a::{b, c::{d, e}}` -> [(['a','b'], alias), ...]"""
    tree = re.sub(r"\s+as\s+", " as ", tree.strip())
    tree = re.sub(r"\s+(?!as )(?<! as)", "", tree)
    out = []

    def go(prefix, s):
        depth, parts, cur = 0, [], ""
        for ch in s:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur:
            parts.append(cur)
        for p in parts:
            if "{" in p:
                head, rest = p.split("{", 1)
                go(prefix + [x for x in head.split("::") if x], rest[: rest.rfind("}")])
            else:
                name, _, alias = p.partition(" as ")
                segs = prefix + [x for x in name.split("::") if x]
                alias = alias or segs[-1]
                out.append((segs, alias))

    go([], tree)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    root = args[0] if args else "src"
    files = {}  # module path tuple -> file
    for dp, _, fs in os.walk(root):
        for f in fs:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dp, f), root)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            if rel == "main.rs":
                parts = ["<bin>"]
            files[tuple(parts)] = rel
    def inline(t):
        # inside an inline `mod x { ... }`, `super` is the file itself
        out, i = [], 0
        for m_ in re.finditer(r"\bmod\s+[a-z_][a-z0-9_]*\s*\{", t):
            if m_.start() < i:
                continue
            depth, j = 0, m_.end() - 1
            while j < len(t):
                depth += {"{": 1, "}": -1}.get(t[j], 0)
                if depth == 0:
                    break
                j += 1
            out.append(t[i:m_.end()])
            out.append(re.sub(r"(?<!::)\bsuper::(super::)?",
                              lambda s: "super::" if s.group(1) else "self::", t[m_.end():j]))
            i = j
        out.append(t[i:])
        return "".join(out)
    text = {m: inline(strip(open(os.path.join(root, f)).read())) for m, f in files.items()}
    defs = {m: set(ITEM.findall(t)) for m, t in text.items()}
    uses = {m: [(segs, alias, bool(pub)) for pub, tr in USE.findall(t) for segs, alias in expand(tr)]
            for m, t in text.items()}

    def absolute(mod, segs):
        if not segs:
            return None
        if segs[0] == "crate":
            return [] , segs[1:]
        base = list(mod) if mod != ("<bin>",) else []
        if segs[0] == "self":
            return base, segs[1:]
        if segs[0] == "super":
            n = 0
            while n < len(segs) and segs[n] == "super":
                n += 1
            return base[: len(base) - n], segs[n:]
        if tuple(base + [segs[0]]) in files:
            return base, segs
        if mod == ("<bin>",) and segs[0] == "vpcbox":
            return [], segs[1:]
        return None

    def resolve(mod, segs, seen=None):
        """The file that defines the item named by segs (as seen from mod)."""
        r = absolute(mod, segs)
        if r is None:
            return None
        base, rest = r
        path = list(base)
        while rest and tuple(path + [rest[0]]) in files:
            path.append(rest.pop(0))
        target = tuple(path)
        if target not in files or not rest:
            return target if target in files else None
        name = rest[0]
        if name in defs[target]:
            return target
        seen = seen or set()
        if (target, name) in seen:
            return target
        seen.add((target, name))
        for usegs, alias, pub in uses[target]:
            if pub and alias == name:
                got = resolve(target, usegs, seen)
                if got:
                    return got
        return target

    edges = defaultdict(set)
    for m, t in text.items():
        paths = [segs for segs, _, _ in uses[m]]
        paths += [p.split("::") for p in INLINE.findall(t)]
        for segs in paths:
            if segs[-1] == "*":
                segs = segs[:-1]
            tgt = resolve(m, list(segs))
            if tgt and tgt != m:
                edges[m].add(tgt)

    # Tarjan's strongly connected components
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            sccs.append(comp)

    for v in list(files):
        if v not in index:
            visit(v)
    cyclic = [sorted(files[x] for x in c) for c in sccs if len(c) > 1]
    mutual = sorted({tuple(sorted((files[a], files[b]))) for a in edges for b in edges[a] if a in edges[b]})
    if "--dot" in sys.argv:
        print("digraph vpcbox {")
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f'  "{files[a]}" -> "{files[b]}";')
        print("}")
        return
    if "--edges" in sys.argv:
        for a in sorted(edges, key=lambda x: files[x]):
            print(files[a], "->", " ".join(sorted(files[b] for b in edges[a])))
    n_edges = sum(len(v) for v in edges.values())
    print(f"{len(files)} files, {n_edges} import edges")
    print(f"{len(cyclic)} import cycles (strongly connected groups), {sum(map(len, cyclic))} files in them")
    for c in cyclic:
        print("  cycle:", " ".join(c))
    print(f"{len(mutual)} pairs of files that import each other")
    for a, b in mutual:
        print("  mutual:", a, "<->", b)


if __name__ == "__main__":
    main()

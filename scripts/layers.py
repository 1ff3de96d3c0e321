#!/usr/bin/env python3
"""Checks the library's import layering: every `crate::X` (or `super::` out of a folder)
a top-level module uses must sit in a lower layer, so there is no import circle and no
module imports upward. Usage: scripts/layers.py [--graph]

The layers, lowest first, are the design's (DESIGN.md, "Layout"): shared vocabulary at the
bottom, composition at the top. A module missing from LAYERS is an error, so a new module
has to be placed on purpose.
"""
import pathlib
import re
import sys

LAYERS = [
    # vocabulary: no crate imports at all
    ["proto", "error", "x509", "methods", "context", "swap", "runtime", "systemd", "pki", "alloc_count",
     "malloc", "throttle", "supervise", "file"],
    # what the vocabulary is turned into: typed config, TLS, counters, the sampler, the
    # remote_write bodies (from the generated messages)
    ["config", "tls", "rpc_stats", "sampler", "remote_write"],
    # the one HTTP client, over TLS configs (the secret store, the remote_write receiver)
    ["outbound"],
    # what reads the config: secrets, health state, logging
    ["secrets", "health", "telemetry"],
    # the Prometheus series (from the sampler's snapshot, the counters and health's
    # verdicts, for the scrape service and the push task)
    ["series"],
    # the policy, over resolved secrets
    ["auth"],
    # transport and handlers; neither names the other
    ["server", "service"],
    # composition
    ["daemon", "client"],
]
# Modules only the binaries (and tests) may import.
TOP_ONLY = {"client"}

ROOT = pathlib.Path(__file__).resolve().parent.parent / "src"
USE = re.compile(r"\bcrate::(\w+)")
# `use crate::{a, b::c, ...}` groups: the names directly inside the braces.
GROUP = re.compile(r"\buse\s+crate::\{", re.S)


def group_names(text, start):
    depth, i, names, token = 1, start, [], ""
    while i < len(text) and depth:
        c = text[i]
        if c == "{":
            if depth == 1 and token.strip():
                names.append(token.strip().split("::")[0])
            depth += 1
            token = ""
        elif c == "}":
            depth -= 1
            if depth == 1:
                token = ""
            elif depth == 0 and token.strip():
                names.append(token.strip().split("::")[0])
        elif c == "," and depth == 1:
            if token.strip():
                names.append(token.strip().split("::")[0])
            token = ""
        elif depth == 1:
            token += c
        i += 1
    return [n.strip() for n in names if n.strip() and n.strip() != "self"]


def strip_comments(text):
    # Unit tests (`#[cfg(test)] mod tests`, last in a file by convention) may use anything.
    text = text.split("#[cfg(test)]\nmod tests")[0]
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def module_of(path):
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "bin" or rel.name in ("main.rs", "lib.rs") and len(rel.parts) == 1:
        return None
    return rel.parts[0].removesuffix(".rs")


def main():
    layer = {m: i for i, ms in enumerate(LAYERS) for m in ms}
    edges, problems = {}, []
    for path in sorted(ROOT.rglob("*.rs")):
        module = module_of(path)
        if module is None:
            continue
        if module not in layer:
            problems.append(f"{path.relative_to(ROOT.parent)}: module `{module}` is in no layer (scripts/layers.py)")
            continue
        text = strip_comments(path.read_text())
        used = set(USE.findall(text))
        for m in GROUP.finditer(text):
            used.update(group_names(text, m.end()))
        used.discard(module)
        for dep in sorted(used):
            if dep not in layer:
                continue  # a macro or a re-export name, not a module
            edges.setdefault(module, set()).add(dep)
            if dep in TOP_ONLY:
                problems.append(f"{path.relative_to(ROOT.parent)}: `{module}` imports `{dep}`, which only the binaries may")
            elif layer[dep] >= layer[module]:
                how = "sideways" if layer[dep] == layer[module] else "upward"
                problems.append(f"{path.relative_to(ROOT.parent)}: `{module}` (layer {layer[module]}) imports `{dep}` (layer {layer[dep]}): {how}")
    if "--graph" in sys.argv:
        for module in sorted(edges, key=lambda m: (-layer[m], m)):
            print(f"{module} -> {', '.join(sorted(edges[module], key=lambda d: (-layer[d], d)))}")
    if "--graph" in sys.argv:
        sys.stdout.flush()
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"layers: {len(problems)} import(s) against the layering", file=sys.stderr)
        return 1
    print(f"layers: {sum(len(v) for v in edges.values())} module imports, all downward")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The echo part of scripts/bench.sh's report, from its results.jsonl: per scenario and
server the median of the rounds (requests/s, p50, p99, server CPU per call), vitalsd's
paired ratio to each peer (each round's vitalsd run against the same round's peer run, then
the median of those ratios), peak RSS, and the server CPU per full and resumed handshake.

  echo_report.py RESULTS   prints the markdown tables
"""
import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
servers = list(dict.fromkeys(r["server"] for r in rows if "requests_per_sec" in r))
scenarios = [s for s in ["5B-1", "5B-512", "4KiB-1", "4KiB-512"] if any(r["label"] == s for r in rows)]


def runs(label, server):
    return [r for r in rows if r["label"] == label and r["server"] == server]


def cpu_per_call_us(r):
    # The server's CPU is read before and after the whole run, warmup included.
    calls = r["requests"] + r["warmup_requests"]
    return r["server_cpu_ticks"] / r["ticks_per_sec"] / max(calls, 1) * 1e6


out = ["| scenario | server | requests/s | p50 ms | p99 ms | server CPU per call | vitalsd / this (requests/s, p99) |",
       "|---|---|---|---|---|---|---|"]
for label in scenarios:
    base = runs(label, "vitalsd")
    for server in servers:
        rs = runs(label, server)
        if not rs:
            continue
        med = lambda f: statistics.median(f(r) for r in rs)
        ratio = ""
        if server != "vitalsd" and base:
            pairs = list(zip(base, rs))
            rps = statistics.median(a["requests_per_sec"] / b["requests_per_sec"] for a, b in pairs)
            p99 = statistics.median(a["latency_us"]["p99"] / b["latency_us"]["p99"] for a, b in pairs)
            ratio = f"{rps:.2f}x, {p99:.2f}x"
        spread = ", ".join(f"{r['requests_per_sec'] / 1000:.1f}k" for r in rs)
        out.append(
            f"| {label} | {server} | {med(lambda r: r['requests_per_sec']):,.0f} ({spread}) "
            f"| {med(lambda r: r['latency_us']['p50']) / 1000:.2f} | {med(lambda r: r['latency_us']['p99']) / 1000:.2f} "
            f"| {med(cpu_per_call_us):.1f} µs | {ratio} |")

rss = {r["server"]: r["kib"] for r in rows if r["label"] == "peak-rss"}
hs = {(r["server"], r["label"]): r for r in rows if r["label"].startswith("handshake-")}
if rss or hs:
    out += ["", "| server | peak RSS | full handshake, server CPU | resumed (TLS 1.3) | full / resumed | resumed (TLS 1.2) |",
            "|---|---|---|---|---|---|"]
    for server in servers:
        def per(mode):
            r = hs.get((server, f"handshake-{mode}"))
            if not r or not r["handshakes"]:
                return None
            return r["server_cpu_ticks"] / r["ticks_per_sec"] / r["handshakes"] * 1e6, r

        def fmt(v):
            if v is None:
                return "n/a"
            us, r = v
            resumed = f", {r['resumed'] / r['handshakes']:.0%} resumed" if r["resumed"] else ""
            return f"{us:,.0f} µs{resumed}"
        full, resumed, tls12 = per("full"), per("resumed"), per("resumed-tls12")
        gain = f"{full[0] / resumed[0]:.1f}x" if full and resumed else ""
        peak = f"{rss[server] / 1024:.1f} MiB" if server in rss else ""
        out.append(f"| {server} | {peak} | {fmt(full)} | {fmt(resumed)} | {gain} | {fmt(tls12)} |")
print("\n".join(out))

# The handshake alone, in memory (examples/footprint.rs tls-cost): vitalsd's server config,
# the server's side timed, no socket, no HTTP/2.
cost = {r["label"]: r for r in rows if r["label"].startswith("tls-cost-")}
if cost:
    def us(mode):
        r = cost.get(f"tls-cost-{mode}")
        return r["server_us_median"] if r else None
    lines = ["", "| the TLS handshake alone (in memory, server side, median) | TLS 1.3 | TLS 1.2 |", "|---|---|---|"]
    for mode in ["full", "resumed"]:
        lines.append(f"| {mode} | {us(mode) or 0:,.0f} µs | {us(mode + '-tls12') or 0:,.0f} µs |")
    if us("full") and us("resumed") and us("full-tls12") and us("resumed-tls12"):
        lines.append(f"| full / resumed | {us('full') / us('resumed'):.1f}x | {us('full-tls12') / us('resumed-tls12'):.1f}x |")
    print("\n".join(lines))

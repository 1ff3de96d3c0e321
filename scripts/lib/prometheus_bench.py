#!/usr/bin/env python3
"""Helpers for scripts/bench.sh's Prometheus part (standard library only).

  prometheus_bench.py scrape URL CA CERT KEY COUNT ENCODING [GAP]
      GETs URL COUNT times over one kept-alive HTTPS connection with a client certificate,
      as Prometheus does, GAP seconds apart (default 0); ENCODING is identity or gzip;
      prints {"count", "bytes", "seconds"} (the last body's size as sent, the time taken).
  prometheus_bench.py sink PORT FILE
      A remote_write receiver on 127.0.0.1:PORT that answers 204 and appends the size of
      each request body to FILE, one line each; runs until killed.
  prometheus_bench.py cpu PID
      The process's CPU time so far in ns, over all its threads (schedstat).
"""
import http.client, http.server, json, os, ssl, sys, time, urllib.parse


def scrape(url, ca, cert, key, count, gzip=False, gap=0.0):
    u = urllib.parse.urlsplit(url)
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.check_hostname = False
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx)
    headers = {"Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"}
    if gzip:
        headers["Accept-Encoding"] = "gzip"
    size = 0
    started = time.monotonic()
    for i in range(count):
        if i and gap:
            time.sleep(gap)
        conn.request("GET", u.path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit(f"GET {url}: {r.status} {body[:200]!r}")
        size = len(body)
    print(json.dumps({"count": count, "bytes": size, "seconds": time.monotonic() - started}))


def sink(port, path):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            n = int(self.headers.get("Content-Length", 0))
            self.rfile.read(n)
            with open(path, "a") as f:
                f.write(f"{n}\n")
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()


def cpu(pid):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        total += int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[0])
    print(total)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "scrape":
        gap = float(args[6]) if len(args) > 6 else 0.0
        scrape(args[0], args[1], args[2], args[3], int(args[4]), args[5] == "gzip", gap)
    elif cmd == "sink":
        sink(int(args[0]), args[1])
    elif cmd == "cpu":
        cpu(args[0])
    else:
        raise SystemExit(__doc__)

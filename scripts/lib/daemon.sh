# Sourced by bench.sh and soak.sh: a release vitalsd on loopback with the dev PKI in $pki.

# Writes a config: the dev PKI, warn-level logs, and the dev client allowed every method.
# Usage: daemon_config FILE PORT [LINES for the [server] table]
daemon_config() {
  cat > "$1" <<TOML
[server]
listen = ["127.0.0.1:$2"]
${3:-}
[tls]
cert = "$pki/server.crt"
key = "$pki/server.key"
client_ca = "$pki/ca.crt"
[log]
level = "warn"
[[auth.rules]]
identities = ["spiffe://vitals.dev/client"]
methods = ["*"]
TOML
}

# Waits (up to 10 s) until ADDR answers a health probe over mutual TLS; exits 1 if it never does.
wait_serving() {
  for _ in $(seq 200); do
    target/release/vitalsctl probe -addr "$1" -tls -tls-ca-cert "$pki/ca.crt" \
      -tls-client-cert "$pki/client.crt" -tls-client-key "$pki/client.key" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "$(basename "$0"): nothing serving on $1" >&2
  exit 1
}

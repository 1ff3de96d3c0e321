// A C++ gRPC echo server for the benchmarks (scripts/bench.sh): vitals.echo.v1.Echo/Echo
// on grpc++'s callback API, mutual TLS with the same dev PKI as vitalsd. Only unary Echo:
// it returns echo_message as sent, the wire shape vitalsctl bench measures.
//
// Built by bench/cpp/build.sh from Debian's libgrpc++-dev and protobuf-compiler-grpc.
//
//   echo_server --listen 127.0.0.1:50173 --pki certs/dev [--sync]
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>

#include "vitals/echo/v1/echo.grpc.pb.h"

using vitals::echo::v1::Echo;
using vitals::echo::v1::EchoRequest;
using vitals::echo::v1::EchoResponse;

namespace {

std::string Read(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    std::cerr << "echo_server: cannot read " << path << "\n";
    std::exit(66);
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The callback API: the handler runs on grpc's own threads and finishes at once.
class CallbackEcho final : public Echo::CallbackService {
  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* context,
                                 const EchoRequest* request,
                                 EchoResponse* response) override {
    response->set_echo_message(request->echo_message());
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

// The synchronous API, for comparison.
class SyncEcho final : public Echo::Service {
  grpc::Status Echo(grpc::ServerContext*, const EchoRequest* request,
                    EchoResponse* response) override {
    response->set_echo_message(request->echo_message());
    return grpc::Status::OK;
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:50173";
  std::string pki = "certs/dev";
  bool sync = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--listen" && i + 1 < argc) {
      listen = argv[++i];
    } else if (arg == "--pki" && i + 1 < argc) {
      pki = argv[++i];
    } else if (arg == "--sync") {
      sync = true;
    } else {
      std::cerr << "usage: echo_server --listen ADDR --pki DIR [--sync]\n";
      return 64;
    }
  }
  grpc::SslServerCredentialsOptions tls(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  tls.pem_root_certs = Read(pki + "/ca.crt");
  tls.pem_key_cert_pairs.push_back({Read(pki + "/server.key"), Read(pki + "/server.crt")});

  CallbackEcho callback;
  SyncEcho synchronous;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, grpc::SslServerCredentials(tls));
  if (sync) {
    builder.RegisterService(&synchronous);
  } else {
    builder.RegisterService(&callback);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) {
    std::cerr << "echo_server: cannot serve on " << listen << "\n";
    return 71;
  }
  std::cerr << "C++ gRPC " << grpc::Version() << " echo (" << (sync ? "sync" : "callback")
            << " API) serving mTLS on " << listen << "\n";
  server->Wait();
  return 0;
}

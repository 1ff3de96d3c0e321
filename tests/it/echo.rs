use std::time::{Duration, Instant};

use tonic::{Code, Request, codec::CompressionEncoding};
use vitals::proto::echo::{EchoRequest, EchoResponse};

use crate::support::{CLIENT_ID, TestDaemon};

fn echo_req(message: &str) -> EchoRequest {
    EchoRequest {
        echo_message: message.to_string(),
        ..Default::default()
    }
}

/// The message comes back as sent, with the verified client identity.
#[tokio::test]
async fn echoes_message_and_identity() {
    let daemon = TestDaemon::start("").await;
    let reply = daemon
        .echo()
        .await
        .echo(echo_req("héllo ✓"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.echo_message, "héllo ✓");
    assert_eq!(reply.peer_identity, CLIENT_ID);
}

/// Named request metadata comes back as response headers and as trailers, each where asked.
#[tokio::test]
async fn echoes_metadata_into_headers_and_trailers() {
    use crate::support::raw;
    let daemon = TestDaemon::start("").await;
    let mut conn = daemon.raw_connect().await;
    let request = EchoRequest {
        echo_headers: vec!["x-head".into(), "x-absent".into()],
        echo_trailers: vec!["x-tail".into(), "x-bin-bin".into()],
        ..echo_req("m")
    };
    let headers = [("x-head", "h1"), ("x-tail", "t1"), ("x-bin-bin", "AAE")];
    let reply = raw::call_with(
        &mut conn.send,
        "/vitals.echo.v1.Echo/Echo",
        &headers,
        raw::frame(&request),
    )
    .await
    .unwrap();
    assert_eq!(reply.grpc_status.as_deref(), Some("0"));
    assert_eq!(reply.message::<EchoResponse>().echo_message, "m");
    assert_eq!(reply.headers.get("x-head").unwrap(), "h1");
    assert!(reply.headers.get("x-tail").is_none());
    assert!(reply.headers.get("x-absent").is_none());
    let trailers = reply.trailers.unwrap();
    assert_eq!(trailers.get("x-tail").unwrap(), "t1");
    assert_eq!(trailers.get("x-bin-bin").unwrap(), "AAE");
    assert!(trailers.get("x-head").is_none());
}

/// Echoing protocol headers is refused with INVALID_ARGUMENT.
#[tokio::test]
async fn reserved_metadata_cannot_be_echoed() {
    let daemon = TestDaemon::start("").await;
    let err = daemon
        .echo()
        .await
        .echo(EchoRequest {
            echo_headers: vec!["grpc-status".into()],
            ..echo_req("m")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

/// A delay longer than the deadline ends at the deadline with DEADLINE_EXCEEDED from the
/// server (a raw call, since tonic's client would give up on its own first).
#[tokio::test]
async fn delay_past_deadline_is_deadline_exceeded() {
    use crate::support::raw;
    let daemon = TestDaemon::start("").await;
    let mut conn = daemon.raw_connect().await;
    let slow = raw::frame(&EchoRequest {
        delay_ms: 5_000,
        ..echo_req("slow")
    });
    let started = Instant::now();
    let reply = raw::call_with(
        &mut conn.send,
        "/vitals.echo.v1.Echo/Echo",
        &[("grpc-timeout", "300m")],
        slow,
    )
    .await
    .unwrap();
    assert_eq!(reply.grpc_status.as_deref(), Some("4"), "{reply:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // Within the deadline the delay is served.
    let mut request = Request::new(EchoRequest {
        delay_ms: 100,
        ..echo_req("ok")
    });
    request.set_timeout(Duration::from_secs(2));
    let started = Instant::now();
    daemon.echo().await.echo(request).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));
}

/// The server's deadline cap bounds a call that brings no deadline.
#[tokio::test]
async fn server_caps_deadline() {
    let daemon = TestDaemon::start("[server]\nmax_deadline = \"300ms\"\n").await;
    let started = Instant::now();
    let err = daemon
        .echo()
        .await
        .echo(EchoRequest {
            delay_ms: 10_000,
            ..echo_req("x")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// The status knob answers with the asked code, message and pushback; `fail_attempts`
/// applies it only to early attempts.
#[tokio::test]
async fn status_knob() {
    let daemon = TestDaemon::start("").await;
    let mut echo = daemon.echo().await;
    let knob = EchoRequest {
        status_code: Code::Unavailable as i32,
        status_message: "try later".into(),
        retry_pushback_ms: 250,
        fail_attempts: 2,
        ..echo_req("x")
    };
    let err = echo.echo(knob.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "try later");
    assert_eq!(err.metadata().get("grpc-retry-pushback-ms").unwrap(), "250");
    let mut third = Request::new(knob);
    third
        .metadata_mut()
        .insert("grpc-previous-rpc-attempts", "2".parse().unwrap());
    assert_eq!(
        echo.echo(third).await.unwrap().into_inner().echo_message,
        "x"
    );
    let bad = EchoRequest {
        status_code: 99,
        ..echo_req("x")
    };
    assert_eq!(
        echo.echo(bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

/// The payload knob returns that many bytes, and refuses sizes above the message limit.
#[tokio::test]
async fn payload_size_knob() {
    let daemon = TestDaemon::start("[server]\nmax_message_size = \"64KiB\"\n").await;
    let mut echo = daemon.echo().await;
    let reply = echo
        .echo(EchoRequest {
            response_size: 4096,
            ..echo_req("p")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.payload.len(), 4096);
    let err = echo
        .echo(EchoRequest {
            response_size: 1 << 20,
            ..echo_req("p")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
}

/// A request above the message size limit is RESOURCE_EXHAUSTED, and the daemon serves on.
#[tokio::test]
async fn oversized_request_is_resource_exhausted() {
    let daemon = TestDaemon::start("[server]\nmax_message_size = \"64KiB\"\n").await;
    let mut echo = daemon.echo().await.max_encoding_message_size(usize::MAX);
    let err = echo.echo(echo_req(&"x".repeat(100_000))).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        echo.echo(echo_req("fine"))
            .await
            .unwrap()
            .into_inner()
            .echo_message,
        "fine"
    );
}

/// gzip and zstd requests are accepted, and responses come back compressed when asked.
#[tokio::test]
async fn gzip_and_zstd() {
    let daemon = TestDaemon::start("").await;
    for encoding in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let mut echo = daemon
            .echo()
            .await
            .send_compressed(encoding)
            .accept_compressed(encoding);
        let message = "compress me ".repeat(200);
        let response = echo.echo(echo_req(&message)).await.unwrap();
        let used = response
            .metadata()
            .get("grpc-encoding")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(used.as_deref(), Some(encoding.to_string().as_str()));
        assert_eq!(response.into_inner().echo_message, message);
    }
}

/// The bidirectional stream answers every message in order.
#[tokio::test]
async fn stream_echoes_each_message() {
    let daemon = TestDaemon::start("").await;
    let outbound = tokio_stream::iter((0..50).map(|i| echo_req(&i.to_string())));
    let mut inbound = daemon
        .echo()
        .await
        .echo_stream(outbound)
        .await
        .unwrap()
        .into_inner();
    for i in 0..50 {
        let reply = inbound.message().await.unwrap().unwrap();
        assert_eq!(reply.echo_message, i.to_string());
    }
    assert!(inbound.message().await.unwrap().is_none());
}

/// Reflection (v1 and v1alpha) lists every service.
#[tokio::test]
async fn reflection_lists_services() {
    use tonic_reflection::pb::{v1, v1alpha};
    let daemon = TestDaemon::start("").await;
    let channel = daemon.channel().await;
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        stream.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a list response");
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    for expected in [
        "grpc.health.v1.Health",
        "vitals.echo.v1.Echo",
        "vitals.metrics.v1.Metrics",
    ] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
}

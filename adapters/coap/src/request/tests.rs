//! Route and option parsing.

use coap_lite::MessageType;

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn packet(method: RequestType, path: &[&str], queries: &[&str]) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(method);
    for segment in path {
        p.add_option(CoapOption::UriPath, segment.as_bytes().to_vec());
    }
    for query in queries {
        p.add_option(CoapOption::UriQuery, query.as_bytes().to_vec());
    }
    p
}

#[test]
fn every_uri_form_routes() -> TestResult {
    for (path, endpoint) in [
        ("t", Endpoint::Telemetry),
        ("telemetry", Endpoint::Telemetry),
        ("e", Endpoint::Event),
        ("event", Endpoint::Event),
    ] {
        let own = UploadRequest::parse(&packet(RequestType::Post, &[path], &[]), true)?;
        assert_eq!((own.endpoint, own.target), (endpoint, Target::Own));
        assert_eq!(own.path, format!("/{path}"));
        let gw = UploadRequest::parse(&packet(RequestType::Put, &[path, "", "dev"], &[]), true)?;
        assert_eq!(
            gw.target,
            Target::Device {
                tenant: None,
                device: DeviceId::parse("dev")?
            }
        );
        assert_eq!(gw.path, format!("/{path}//dev"));
        let full =
            UploadRequest::parse(&packet(RequestType::Put, &[path, "tn", "dev"], &[]), true)?;
        assert_eq!(
            full.target,
            Target::Device {
                tenant: Some(TenantId::parse("tn")?),
                device: DeviceId::parse("dev")?
            }
        );
    }
    Ok(())
}

#[test]
fn wrong_methods_uris_and_ids_are_refused() {
    let refused = |p: Packet| UploadRequest::parse(&p, true).err().map(|e| e.code());
    use coap_lite::ResponseType as R;
    assert_eq!(
        refused(packet(RequestType::Put, &["t"], &[])),
        Some(R::MethodNotAllowed)
    );
    assert_eq!(
        refused(packet(RequestType::Post, &["t", "a", "b"], &[])),
        Some(R::MethodNotAllowed)
    );
    assert_eq!(
        refused(packet(RequestType::Get, &["e"], &[])),
        Some(R::MethodNotAllowed)
    );
    assert_eq!(
        refused(packet(RequestType::Post, &["x"], &[])),
        Some(R::NotFound)
    );
    assert_eq!(
        refused(packet(RequestType::Post, &[], &[])),
        Some(R::NotFound)
    );
    assert_eq!(
        refused(packet(RequestType::Put, &["t", "a"], &[])),
        Some(R::NotFound)
    );
    assert_eq!(
        refused(packet(RequestType::Put, &["t", "a", "b", "c"], &[])),
        Some(R::NotFound)
    );
    assert_eq!(
        refused(packet(RequestType::Put, &["t", "a b", "dev"], &[])),
        Some(R::BadRequest)
    );
}

#[test]
fn con_is_at_least_once_non_at_most_once_and_events_need_con() -> TestResult {
    let t = packet(RequestType::Post, &["t"], &[]);
    assert_eq!(UploadRequest::parse(&t, true)?.qos, Qos::AtLeastOnce);
    assert_eq!(UploadRequest::parse(&t, false)?.qos, Qos::AtMostOnce);
    let e = packet(RequestType::Post, &["e"], &[]);
    assert_eq!(UploadRequest::parse(&e, true)?.qos, Qos::AtLeastOnce);
    assert!(matches!(
        UploadRequest::parse(&e, false),
        Err(RequestError::EventNotConfirmable)
    ));
    Ok(())
}

#[test]
fn content_format_empty_and_ttd() -> TestResult {
    let mut p = packet(RequestType::Post, &["t"], &["hono-ttd=30"]);
    p.add_option(CoapOption::ContentFormat, vec![50]);
    let r = UploadRequest::parse(&p, true)?;
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert_eq!(r.ttd, Some(30));

    let mut p = packet(RequestType::Post, &["t"], &[]);
    p.add_option(CoapOption::ContentFormat, vec![]);
    assert_eq!(
        UploadRequest::parse(&p, true)?.content_type.as_deref(),
        Some("text/plain; charset=utf-8")
    );
    let none = UploadRequest::parse(&packet(RequestType::Post, &["t"], &[]), true)?;
    assert_eq!(none.content_type, None);

    let empty = UploadRequest::parse(&packet(RequestType::Post, &["t"], &["empty"]), true)?;
    assert_eq!(empty.content_type.as_deref(), Some(EMPTY_NOTIFICATION));
    let mut with_body = packet(RequestType::Post, &["t"], &["empty"]);
    with_body.payload = b"x".to_vec();
    assert!(matches!(
        UploadRequest::parse(&with_body, true),
        Err(RequestError::EmptyWithPayload)
    ));
    assert!(matches!(
        UploadRequest::parse(&packet(RequestType::Post, &["t"], &["hono-ttd=soon"]), true),
        Err(RequestError::BadTtd)
    ));
    assert_eq!(media_type(42), "application/octet-stream");
    assert_eq!(media_type(60), "application/cbor");
    Ok(())
}

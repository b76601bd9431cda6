//! Tests of routing and header parsing.

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn route(method: &str, path: &str) -> Result<Route, RequestError> {
    Route::parse(method, path)
}

#[test]
fn routes_of_hono_http_adapter() -> TestResult {
    assert_eq!(
        route("POST", "/telemetry")?,
        Route {
            endpoint: Endpoint::Telemetry,
            target: Target::Own
        }
    );
    assert_eq!(
        route("PUT", "/event/t1/d1")?,
        Route {
            endpoint: Endpoint::Event,
            target: Target::Device {
                tenant: Some(TenantId::parse("t1")?),
                device: DeviceId::parse("d1")?
            }
        }
    );
    assert_eq!(
        route("PUT", "/telemetry//d1")?.target,
        Target::Device {
            tenant: None,
            device: DeviceId::parse("d1")?
        }
    );
    Ok(())
}

#[test]
fn routing_errors() {
    let status = |m: &str, p: &str| route(m, p).err().map(|e| e.status().as_u16());
    assert_eq!(status("GET", "/telemetry"), Some(405));
    assert_eq!(status("PUT", "/telemetry"), Some(405));
    assert_eq!(status("POST", "/event/t1/d1"), Some(405));
    assert_eq!(status("POST", "/"), Some(404));
    assert_eq!(status("POST", "/command/res/1"), Some(404));
    assert_eq!(status("POST", "/telemetry/"), Some(404));
    assert_eq!(status("PUT", "/telemetry/t1/d1/x"), Some(404));
    assert_eq!(status("PUT", "/telemetry/t1/"), Some(400));
    assert_eq!(status("PUT", "/telemetry/t%201/d1"), Some(400));
    assert_eq!(status("PUT", "/telemetry/t1/d%2"), Some(400));
    assert_eq!(status("PUT", "/telemetry/t1/d%zz"), Some(400));
    assert_eq!(status("PUT", "/telemetry/t1/d%2F1"), Some(400));
}

#[test]
fn percent_encoded_ids_are_decoded() -> TestResult {
    let target = route("PUT", "/event/t1/urn%3Adev%3D1")?.target;
    assert_eq!(
        target,
        Target::Device {
            tenant: Some(TenantId::parse("t1")?),
            device: DeviceId::parse("urn:dev=1")?
        }
    );
    Ok(())
}

/// The fields of a head with these header fields.
fn headers(pairs: &[(&'static str, &'static str)]) -> Fields<'static> {
    let mut fields = Fields::default();
    for (name, value) in pairs {
        let slot = match *name {
            "authorization" => &mut fields.authorization,
            "content-type" => &mut fields.content_type,
            "qos-level" => &mut fields.qos_level,
            "hono-ttl" => &mut fields.hono_ttl,
            "hono-ttd" => &mut fields.hono_ttd,
            other => panic!("no field {other}"),
        };
        *slot = Some(value.as_bytes());
    }
    fields
}

#[test]
fn basic_credentials() -> TestResult {
    // "sensor@t1:pa:ss" — the password may contain ':'.
    let ok = headers(&[("authorization", "Basic c2Vuc29yQHQxOnBhOnNz")]);
    let creds = BasicCredentials::from_header(ok.authorization)?.ok_or("no credentials")?;
    assert_eq!(
        (creds.username.as_str(), creds.password.as_str()),
        ("sensor@t1", "pa:ss")
    );
    assert!(!format!("{creds:?}").contains("pa:ss"));
    assert!(BasicCredentials::from_header(None)?.is_none());
    for bad in ["Basic", "Basic !!!", "Bearer abc", "Basic c2Vuc29y"] {
        let h = headers(&[("authorization", bad)]);
        let e = BasicCredentials::from_header(h.authorization)
            .err()
            .map(|e| e.status().as_u16());
        assert_eq!(e, Some(401), "{bad}");
    }
    Ok(())
}

#[test]
fn qos_ttl_ttd_and_content_type() -> TestResult {
    let p = Params::parse(Endpoint::Telemetry, &Fields::default(), None)?;
    assert_eq!(
        p,
        Params {
            qos: Qos::AtMostOnce,
            content_type: None,
            ttl: None,
            ttd: None
        }
    );
    let p = Params::parse(
        Endpoint::Telemetry,
        &headers(&[("qos-level", "1"), ("content-type", "a/b")]),
        Some("hono-ttd=5"),
    )?;
    assert_eq!(
        (p.qos, p.content_type.as_deref(), p.ttd),
        (Qos::AtLeastOnce, Some("a/b"), Some(5))
    );
    for bad in ["2", "-1", "one", ""] {
        let h = headers(&[("qos-level", bad)]);
        assert!(matches!(
            Params::parse(Endpoint::Telemetry, &h, None),
            Err(RequestError::BadQos)
        ));
    }
    let p = Params::parse(
        Endpoint::Event,
        &headers(&[("qos-level", "7"), ("hono-ttl", "30")]),
        None,
    )?;
    assert_eq!(
        (p.qos, p.ttl),
        (Qos::AtLeastOnce, Some(Duration::from_secs(30)))
    );
    let p = Params::parse(
        Endpoint::Event,
        &Fields::default(),
        Some("a=b&hono-ttl=9&hono-ttd=-1"),
    )?;
    assert_eq!((p.ttl, p.ttd), (Some(Duration::from_secs(9)), Some(-1)));
    let p = Params::parse(Endpoint::Telemetry, &Fields::default(), Some("hono-ttl=9"))?;
    assert_eq!(p.ttl, None, "telemetry has no hono-ttl");
    let bad_ttl = Params::parse(Endpoint::Event, &headers(&[("hono-ttl", "-5")]), None);
    assert!(matches!(bad_ttl, Err(RequestError::BadTtl)));
    let bad_ttd = Params::parse(Endpoint::Event, &Fields::default(), Some("hono-ttd=soon"));
    assert!(matches!(bad_ttd, Err(RequestError::BadTtd)));
    Ok(())
}

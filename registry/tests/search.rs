//! Search over real HTTP: paging, filters with wildcards, sorting, isGateway, errors.

mod common;

use common::{TestResult, config, expect, start};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn ids(body: &Value) -> Vec<&str> {
    body["result"]
        .as_array()
        .map(|r| r.iter().filter_map(|d| d["id"].as_str()).collect())
        .unwrap_or_default()
}

fn q(v: Value) -> String {
    form_urlencoded::byte_serialize(v.to_string().as_bytes()).collect()
}

#[tokio::test]
async fn device_search() -> TestResult {
    let s = start(config()).await?;
    s.tenant("t", json!({})).await?;
    for (i, id) in ["d-1", "d-2", "d-3", "d-10", "x-1"].iter().enumerate() {
        s.device("t", id, json!({"ext": {"n": i, "kind": if i % 2 == 0 { "even" } else { "odd" }}, "via": ["gw"]})).await?;
    }
    s.device("t", "gw", json!({"memberOf": ["g1"]})).await?;
    s.device("t", "gw2", json!({"memberOf": ["g2"]})).await?;
    s.device("t", "y", json!({"viaGroups": ["g2"]})).await?;
    s.device(
        "t",
        "prov",
        json!({"authorities": ["auto-provisioning-enabled"]}),
    )
    .await?;

    let all = s.get("/devices/t").await?;
    expect(all.status, StatusCode::OK, &all.body)?;
    assert_eq!(all.body["total"], 9);

    let desc = q(json!({"field": "/id", "direction": "desc"}));
    let r = s
        .get(&format!(
            "/devices/t?pageSize=2&pageOffset=1&sortJson={desc}"
        ))
        .await?;
    assert_eq!(r.body["total"], 9);
    assert_eq!(ids(&r.body), vec!["x-1", "prov"]);

    let by_n = q(json!({"field": "/ext/n", "direction": "desc"}));
    let odd = q(json!({"field": "/ext/kind", "op": "eq", "value": "odd"}));
    let r = s
        .get(&format!("/devices/t?filterJson={odd}&sortJson={by_n}"))
        .await?;
    assert_eq!(ids(&r.body), vec!["d-10", "d-2"]);

    let wild = q(json!({"field": "/id", "value": "d-?"}));
    let r = s
        .get(&format!("/devices/t?filterJson={wild}&filterJson={odd}"))
        .await?;
    assert_eq!(ids(&r.body), vec!["d-2"]);
    let star = q(json!({"field": "/id", "value": "d-*"}));
    let r = s.get(&format!("/devices/t?filterJson={star}")).await?;
    assert_eq!(r.body["total"], 4);
    let num = q(json!({"field": "/ext/n", "value": 3}));
    assert_eq!(
        ids(&s.get(&format!("/devices/t?filterJson={num}")).await?.body),
        vec!["d-10"]
    );
    let arr = q(json!({"field": "/via", "value": "g*"}));
    assert_eq!(
        s.get(&format!("/devices/t?filterJson={arr}")).await?.body["total"],
        5
    );

    let none = q(json!({"field": "/id", "value": "zzz*"}));
    expect(
        s.get(&format!("/devices/t?filterJson={none}"))
            .await?
            .status,
        StatusCode::NOT_FOUND,
        &Value::Null,
    )?;

    let gws = s.get("/devices/t?isGateway=true").await?;
    assert_eq!(ids(&gws.body), vec!["gw", "gw2", "prov"]);
    assert_eq!(s.get("/devices/t?isGateway=false").await?.body["total"], 6);

    for bad in [
        "pageSize=201",
        "pageSize=0",
        "pageOffset=-1",
        "filterJson=nojson",
        "isGateway=maybe",
        &format!("filterJson={}", q(json!({"field": "id", "value": 1}))),
        &format!(
            "filterJson={}",
            q(json!({"field": "/id", "op": "gt", "value": 1}))
        ),
        &format!("sortJson={}", q(json!({"field": "/id", "direction": "up"}))),
    ] {
        let r = s.get(&format!("/devices/t?{bad}")).await?;
        expect(
            r.status,
            StatusCode::BAD_REQUEST,
            &json!({"query": bad, "reply": r.body}),
        )?;
    }
    expect(
        s.get("/devices/nope").await?.status,
        StatusCode::NOT_FOUND,
        &Value::Null,
    )?;
    Ok(())
}

#[tokio::test]
async fn tenant_search_pages_by_default_30() -> TestResult {
    let s = start(config()).await?;
    expect(
        s.get("/tenants").await?.status,
        StatusCode::NOT_FOUND,
        &Value::Null,
    )?;
    for i in 0..35 {
        s.tenant(
            &format!("t{i:02}"),
            json!({"ext": {"group": if i < 5 { "small" } else { "big" }}}),
        )
        .await?;
    }
    let r = s.get("/tenants").await?;
    assert_eq!(r.body["total"], 35);
    assert_eq!(r.body["result"].as_array().map(Vec::len), Some(30));
    let small = q(json!({"field": "/ext/group", "value": "small"}));
    let r = s.get(&format!("/tenants?filterJson={small}")).await?;
    assert_eq!(ids(&r.body), vec!["t00", "t01", "t02", "t03", "t04"]);
    Ok(())
}

//! Peer bytes never panic the readers: valid frames and messages, encoded by fe2o3, with random
//! bytes changed, cut or appended, go through `next_frame` and `message::scan`, which may refuse
//! them but must return.

use bytes::{BufMut, BytesMut};
use fe2o3_amqp::types::definitions::{DeliveryTag, Handle};
use fe2o3_amqp::types::messaging::message::__private::Serializable;
use fe2o3_amqp::types::messaging::{Body, Data, Header, Message, Properties};
use fe2o3_amqp::types::performatives::Transfer;
use fe2o3_amqp::types::primitives::{Binary, Value};
use ferry_amqp_wire::{encode, message, next_frame};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A transfer frame carrying a whole message, as a device or the northbound sends it.
fn transfer_with_message() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let message: Message<Body<Value>> = Message {
        header: Some(Header {
            durable: true,
            ttl: Some(30_000),
            ..Default::default()
        }),
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            to: Some("telemetry/DEFAULT_TENANT/4711".into()),
            content_type: Some("text/plain".into()),
            ..Default::default()
        }),
        application_properties: None,
        body: Body::Data(vec![Data(Binary::from(vec![0x5a; 64]))].into()),
        footer: None,
    };
    let transfer = Transfer {
        handle: Handle(0),
        delivery_id: Some(1),
        delivery_tag: Some(DeliveryTag::from(vec![0, 0, 0, 1])),
        message_format: Some(0),
        settled: Some(false),
        more: false,
        rcv_settle_mode: None,
        state: None,
        resume: false,
        aborted: false,
        batchable: false,
    };
    let mut wire = BytesMut::new();
    encode(&mut wire, 0, Some(&transfer))?;
    wire.put_slice(&serde_amqp::to_vec(&Serializable(message))?);
    let size = u32::try_from(wire.len())?;
    wire[..4].copy_from_slice(&size.to_be_bytes());
    Ok(wire.to_vec())
}

#[test]
fn mutated_frames_and_messages_never_panic() -> TestResult {
    let valid = transfer_with_message()?;
    let frame = next_frame(&mut BytesMut::from(valid.as_slice()), 4096)?.ok_or("incomplete")?;
    let fe2o3_amqp::frames::amqp::FrameBody::Transfer { payload, .. } = frame.body else {
        return Err("not a transfer".into());
    };
    assert_eq!(
        message::scan(&payload)?.to,
        Some("telemetry/DEFAULT_TENANT/4711")
    );
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut read_whole = 0;
    for _ in 0..20_000 {
        let mut bytes = valid.clone();
        for _ in 0..rng.random_range(1..4) {
            match rng.random_range(0..3) {
                0 => {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = rng.random();
                }
                1 => bytes.truncate(rng.random_range(0..bytes.len())),
                _ => bytes.push(rng.random()),
            }
            if bytes.is_empty() {
                break;
            }
        }
        // The message part alone (what scan sees once a delivery is complete).
        let _ = message::scan(bytes.get(8..).unwrap_or_default());
        let mut received = BytesMut::from(bytes.as_slice());
        if let Ok(Some(frame)) = next_frame(&mut received, 4096) {
            read_whole += 1;
            if let fe2o3_amqp::frames::amqp::FrameBody::Transfer { payload, .. } = frame.body {
                let _ = message::scan(&payload);
            }
        }
    }
    // The mutations leave some frames readable, so scan also ran on real transfer payloads.
    assert!(read_whole > 50, "{read_whole}");
    Ok(())
}

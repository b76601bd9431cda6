//! The connection engine against hand-written frames: a device that sends its SASL, header,
//! `open`, `begin` and `attach` in one go, link credit, a message split over two transfers, and
//! outcomes of several deliveries.

mod common;

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use fe2o3_amqp::frames::amqp::{Frame, FrameBody, FrameDecoder};
use fe2o3_amqp::frames::sasl::{Frame as SaslFrame, FrameCodec};
use fe2o3_amqp::types::definitions::{Handle, ReceiverSettleMode, Role, SenderSettleMode};
use fe2o3_amqp::types::messaging::{DeliveryState, Target, TargetArchetype};
use fe2o3_amqp::types::performatives::{Attach, Begin, ChannelMax, MaxFrameSize, Open, Transfer};
use fe2o3_amqp::types::primitives::Symbol;
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

use common::{Error, TestResult};

const WAIT: Duration = Duration::from_secs(5);

/// Appends an AMQP frame with `performative` and `payload`.
fn put_frame<P: Serialize>(out: &mut BytesMut, performative: &P, payload: &[u8]) -> TestResult {
    let body = serde_amqp::to_vec(performative)?;
    out.put_u32(u32::try_from(8 + body.len() + payload.len())?);
    out.put_slice(&[2, 0, 0, 0]);
    out.put_slice(&body);
    out.put_slice(payload);
    Ok(())
}

async fn read_frame(stream: &mut TcpStream) -> Result<Frame, Error> {
    let size = usize::try_from(tokio::time::timeout(WAIT, stream.read_u32()).await??)?;
    let mut body = BytesMut::zeroed(size.checked_sub(4).ok_or("short frame")?);
    stream.read_exact(&mut body).await?;
    Ok(FrameDecoder {}.decode(&mut body)?.ok_or("empty")?)
}

async fn read_sasl_frame(stream: &mut TcpStream) -> Result<SaslFrame, Error> {
    let size = usize::try_from(stream.read_u32().await?)?;
    let mut body = BytesMut::zeroed(size.checked_sub(4).ok_or("short frame")?);
    stream.read_exact(&mut body).await?;
    Ok(FrameCodec {}.decode(&mut body)?.ok_or("empty")?)
}

fn transfer(delivery_id: Option<u32>, more: bool) -> Transfer {
    Transfer {
        handle: Handle(0),
        delivery_id,
        delivery_tag: delivery_id.map(|id| id.to_be_bytes().to_vec().into()),
        message_format: Some(0),
        settled: Some(false),
        more,
        rcv_settle_mode: None,
        state: None,
        resume: false,
        aborted: false,
        batchable: false,
    }
}

/// Connects, sending everything up to the `attach` at once, and returns the link credit granted.
async fn connect_pipelined(addr: std::net::SocketAddr) -> Result<(TcpStream, u32), Error> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut out = BytesMut::new();
    out.put_slice(b"AMQP\x03\x01\x00\x00");
    let init = SaslFrame::Init(SaslInit {
        mechanism: Symbol::from("PLAIN"),
        initial_response: Some(b"\0sensor1@t1\0pw1".to_vec().into()),
        hostname: None,
    });
    let mut sasl = BytesMut::new();
    FrameCodec {}.encode(init, &mut sasl)?;
    out.put_u32(u32::try_from(sasl.len() + 4)?);
    out.put_slice(&sasl);
    out.put_slice(b"AMQP\x00\x01\x00\x00");
    let open = Open {
        container_id: "wire-device".to_owned(),
        hostname: None,
        max_frame_size: MaxFrameSize(65536),
        channel_max: ChannelMax(0),
        idle_time_out: None,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    put_frame(&mut out, &open, &[])?;
    let begin = Begin {
        remote_channel: None,
        next_outgoing_id: 0,
        incoming_window: 100,
        outgoing_window: 100,
        handle_max: Handle(7),
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    put_frame(&mut out, &begin, &[])?;
    let attach = Attach {
        name: "upload".to_owned(),
        handle: Handle(0),
        role: Role::Sender,
        snd_settle_mode: SenderSettleMode::Unsettled,
        rcv_settle_mode: ReceiverSettleMode::First,
        source: None,
        target: Some(Box::new(TargetArchetype::Target(Target::builder().build()))),
        unsettled: None,
        incomplete_unsettled: false,
        initial_delivery_count: Some(0),
        max_message_size: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    put_frame(&mut out, &attach, &[])?;
    stream.write_all(&out).await?;

    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await?;
    assert_eq!(&header, b"AMQP\x03\x01\x00\x00");
    assert!(matches!(
        read_sasl_frame(&mut stream).await?,
        SaslFrame::Mechanisms(_)
    ));
    let SaslFrame::Outcome(outcome) = read_sasl_frame(&mut stream).await? else {
        return Err("no SASL outcome".into());
    };
    assert_eq!(outcome.code, SaslCode::Ok);
    stream.read_exact(&mut header).await?;
    assert_eq!(&header, b"AMQP\x00\x01\x00\x00");
    assert!(matches!(
        read_frame(&mut stream).await?.body,
        FrameBody::Open(_)
    ));
    assert!(matches!(
        read_frame(&mut stream).await?.body,
        FrameBody::Begin(_)
    ));
    let FrameBody::Attach(attached) = read_frame(&mut stream).await?.body else {
        return Err("no attach".into());
    };
    assert_eq!(attached.role, Role::Receiver);
    let FrameBody::Flow(flow) = read_frame(&mut stream).await?.body else {
        return Err("no flow".into());
    };
    assert_eq!(flow.handle, Some(Handle(0)));
    Ok((stream, flow.link_credit.ok_or("no credit")?))
}

/// An encoded message to `t` with a Data body.
fn encoded_message(payload: &str) -> Result<Vec<u8>, Error> {
    let message = common::message("t", payload);
    Ok(serde_amqp::to_vec(
        &fe2o3_amqp::types::messaging::message::__private::Serializable(message),
    )?)
}

#[tokio::test]
async fn pipelined_frames_split_transfers_and_settled_outcomes() -> TestResult {
    let h = common::start(|_| {}).await?;
    let (mut stream, credit) = connect_pipelined(h.addr).await?;
    assert!(credit >= 100, "credit {credit} cannot keep a pipeline full");

    // One message in two transfer frames, then two more messages, all in one write.
    let first = encoded_message("split in two")?;
    let (head, tail) = first.split_at(first.len() / 2);
    let mut out = BytesMut::new();
    put_frame(&mut out, &transfer(Some(0), true), head)?;
    put_frame(&mut out, &transfer(None, false), tail)?;
    put_frame(
        &mut out,
        &transfer(Some(1), false),
        &encoded_message("two")?,
    )?;
    put_frame(
        &mut out,
        &transfer(Some(2), false),
        &encoded_message("three")?,
    )?;
    stream.write_all(&out).await?;

    let mut settled = Vec::new();
    while settled.len() < 3 {
        let FrameBody::Disposition(disposition) = read_frame(&mut stream).await?.body else {
            continue;
        };
        assert!(disposition.settled);
        assert_eq!(disposition.role, Role::Receiver);
        assert!(matches!(
            disposition.state,
            Some(DeliveryState::Accepted(_))
        ));
        settled.extend(disposition.first..=disposition.last.unwrap_or(disposition.first));
    }
    settled.sort_unstable();
    assert_eq!(settled, [0, 1, 2]);
    let mut payloads: Vec<_> = h.northbound.sent().into_iter().map(|m| m.payload).collect();
    payloads.sort();
    assert_eq!(payloads, ["split in two", "three", "two"]);
    h.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn a_short_frame_closes_the_connection_with_a_framing_error() -> TestResult {
    let h = common::start(|_| {}).await?;
    // A frame size below the minimum after the open: the connection closes with a framing error.
    let (mut stream, _) = connect_pipelined(h.addr).await?;
    stream.write_all(&[0, 0, 0, 4]).await?;
    let FrameBody::Close(close) = read_frame(&mut stream).await?.body else {
        return Err("no close".into());
    };
    let condition = close.error.ok_or("no error")?.condition;
    assert_eq!(
        condition,
        fe2o3_amqp::types::definitions::ConnectionError::FramingError.into()
    );
    // The adapter still serves.
    let (_stream, credit) = connect_pipelined(h.addr).await?;
    assert!(credit > 0);
    h.shutdown.cancel();
    Ok(())
}

//! AMQP 1.0 on the wire, shared by Ferry's own AMQP engines: the device adapter, the embedded
//! northbound and the perf harness's clients.
//!
//! fe2o3-amqp supplies the types (performatives, messages) and their serde encoding; this crate
//! adds what its connection engine keeps private: cutting checked frames off received bytes and
//! writing frames (AMQP and SASL) into one output buffer, so an engine can run a whole
//! connection in one task; and reading the few fields Ferry needs from a received message
//! without decoding all of it.

pub mod channels;
mod codec;
pub mod frame;
pub mod message;
pub mod sasl;

pub use channels::Channels;
pub use frame::{
    FramingError, check_performative, encode, encode_or_log, framing_error, next_frame,
};
pub use sasl::{encode_sasl, next_sasl_frame};

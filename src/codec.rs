//! The gRPC codec: prost's, except that a request that does not decode is
//! the caller's fault, not the server's.
//!
//! tonic maps every protobuf decode error to INTERNAL, which tells a client
//! the server broke. A string field that is not valid UTF-8, or bytes that
//! are not a message at all, are bad input: INVALID_ARGUMENT, with prost's
//! description, which names the field (`Annotation.note: invalid string
//! value: data is not UTF-8 encoded`). Nothing is stored, since the handler
//! never runs.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::error::Error;

/// prost encoding; decode errors are INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(ProstDecoder::default())
    }
}

/// [`ProstDecoder`], with decode errors as INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let item = U::decode(buf)
            .map_err(|e| Status::from(Error::invalid("MALFORMED_REQUEST", "request", e.to_string())))?;
        Ok(Some(item))
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.0.buffer_settings()
    }
}

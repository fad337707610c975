//! One exchange on a worker connection: the framed request written (its body through the
//! connection's shared memory when it fits there), and the framed answer read back, frame by
//! frame, large body frames into reused buffers and shared chunks from the shared cells.

use bytes::{BufMut, Bytes, BytesMut};
use sluice_proto::{
    decode, encode_request_head, encode_shared_body, frame_header, shared::SHARED_BODY_BYTES,
    Frame, Kind, RequestMeta, COALESCE_BYTES, MAX_CHUNK_BYTES,
};
use tokio::net::UnixStream;

use super::conn::WorkerConn;
use super::large_bodies;
use super::shared::Region;

/// Reads and drops what is left of an answer nobody wants. `Ok(true)` once it has ended,
/// `Ok(false)` if the connection closed first.
pub(crate) async fn skip_answer(conn: &mut WorkerConn) -> std::io::Result<bool> {
    loop {
        match read_frame(conn).await {
            Ok(Some(Frame::ResponseEnd | Frame::Error(..))) => return Ok(true),
            Ok(Some(_)) => {}
            Ok(None) => return Ok(false),
            Err(err) if closed(&err) => return Ok(false),
            Err(err) => return Err(err),
        }
    }
}

/// A worker that dies with a request unread in its socket resets the connection instead of
/// closing it.
pub(crate) fn closed(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::ConnectionReset
}

/// Frames one request into `buf` and writes it to `stream`, its body through `shared` memory
/// if given and the body fits there.
pub(crate) async fn write_request<'h>(
    stream: &UnixStream,
    buf: &mut BytesMut,
    shared: Option<&Region>,
    meta: &RequestMeta<'_>,
    headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
    chunks: &[Bytes],
) -> std::io::Result<()> {
    buf.clear();
    // Never from a client's bytes: limit_request_field_size is capped under the u16 of a name,
    // and a head is at most MAX_HEAD_BYTES, far inside a frame.
    encode_request_head(buf, meta, headers)
        .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err))?;
    let body_len = meta.body_len as usize;
    let result = async {
        if let Some(shared) =
            shared.filter(|_| body_len > COALESCE_BYTES && body_len <= SHARED_BODY_BYTES)
        {
            // Through the memory this connection shares with its worker (see `shared`).
            let len = shared.put_request_body(chunks);
            encode_shared_body(buf, len);
            return write_all(stream, buf).await;
        }
        for chunk in chunks {
            for piece in chunk.chunks(MAX_CHUNK_BYTES) {
                buf.put_slice(&frame_header(Kind::RequestBody, piece.len()));
                if piece.len() <= COALESCE_BYTES {
                    buf.put_slice(piece);
                } else {
                    write_all(stream, buf).await?;
                    buf.clear();
                    write_all(stream, piece).await?;
                }
            }
        }
        write_all(stream, buf).await
    }
    .await;
    buf.clear();
    result
}

async fn write_all(stream: &UnixStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// The response chunk a worker put in one of the connection's shared cells.
pub(crate) fn shared_chunk(conn: &WorkerConn, cell: u32, len: u32) -> std::io::Result<Bytes> {
    match &conn.shared {
        Some(region) => region.response_chunk(cell, len),
        None => Err(std::io::Error::other(
            "worker used shared memory this connection does not have",
        )),
    }
}

pub(crate) async fn read_frame(conn: &mut WorkerConn) -> std::io::Result<Option<Frame>> {
    loop {
        if let Some(len) = large_bodies::large_body_ahead(&conn.read_buf) {
            let body = large_bodies::read_large_body(&conn.stream, &mut conn.read_buf, len).await?;
            return Ok(body.map(Frame::ResponseBody));
        }
        match decode(&mut conn.read_buf).map_err(std::io::Error::other)? {
            Some(Frame::ResponseBodyShared { cell, len }) => {
                return shared_chunk(conn, cell, len).map(|chunk| Some(Frame::ResponseBody(chunk)))
            }
            Some(frame) => return Ok(Some(frame)),
            None => {}
        }
        conn.read_buf.reserve(64 * 1024);
        let read = loop {
            match conn.stream.try_read_buf(&mut conn.read_buf) {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    conn.stream.readable().await?
                }
                read => break read?,
            }
        };
        if read == 0 {
            return Ok(None);
        }
    }
}

//! `Backup`: the file the store wrote, streamed in chunks, then removed.

use std::io::Read;
use std::path::PathBuf;

use tonic::Status;

use crate::error::Error;
use crate::pb;

/// Bytes per chunk: well under a client's 4 MiB message limit.
const CHUNK: usize = 1024 * 1024;

/// Streams `path` and removes it once sent (or once the client is gone).
pub(super) fn stream(
    path: PathBuf,
    revision: u64,
) -> tokio_stream::wrappers::ReceiverStream<Result<pb::BackupChunk, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let send = || -> Result<(), Error> {
            let mut file = std::fs::File::open(&path).map_err(Error::internal)?;
            let size = file.metadata().map_err(Error::internal)?.len();
            loop {
                let mut data = vec![0; CHUNK];
                let n = file.read(&mut data).map_err(Error::internal)?;
                if n == 0 {
                    return Ok(());
                }
                data.truncate(n);
                let chunk = pb::BackupChunk { data, revision, size };
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return Ok(());
                }
            }
        };
        if let Err(e) = send() {
            let _ = tx.blocking_send(Err(e.into()));
        }
        let _ = std::fs::remove_file(&path);
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

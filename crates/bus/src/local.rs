//! The worker's end of the local relay: writes the messages it stored, reads the ones the
//! master forwards (see the crate docs for the protocol).

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

use c10k_core::store::Message;
use tracing::{debug, warn};

use crate::{wire, Bus, BusError, Deliver};

/// How long a publish may wait for the master to make room. The master reads all the
/// time, so this only bites when it is wedged; the message is then left to gap filling.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// A worker's end of the socket pair the master made for it before forking.
#[derive(Debug)]
pub struct LocalRelay {
    writer: Mutex<UnixStream>,
    reader: Mutex<Option<UnixStream>>,
}

impl LocalRelay {
    /// Wraps the worker's end of the pair (blocking mode).
    pub fn new(stream: UnixStream) -> io::Result<LocalRelay> {
        stream.set_nonblocking(false)?;
        let reader = stream.try_clone()?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(LocalRelay { writer: Mutex::new(stream), reader: Mutex::new(Some(reader)) })
    }

    /// Tells the master this worker has loaded its history and is about to serve.
    pub fn announce_ready(&self) -> io::Result<()> {
        self.write_line(b"ready\n")
    }

    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        // One lock per line, so lines from several offload threads never interleave.
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        writer.write_all(line)
    }
}

impl Bus for LocalRelay {
    fn name(&self) -> &'static str {
        "local"
    }

    fn publish(&self, message: &Message) -> Result<(), BusError> {
        Ok(self.write_line(&wire::encode(message))?)
    }

    fn subscribe(&self, deliver: Deliver) -> Result<(), BusError> {
        let reader = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take();
        let reader = reader.ok_or(BusError::AlreadySubscribed)?;
        std::thread::Builder::new().name("c10k-relay".into()).spawn(move || {
            for line in BufReader::new(reader).split(b'\n') {
                let line = match line {
                    Ok(line) => line,
                    Err(e) => {
                        warn!("relay: {e}; no more messages from other workers");
                        return;
                    }
                };
                match wire::decode(&line) {
                    Ok(message) => deliver(message),
                    Err(e) => warn!("{e}"),
                }
            }
            // The master closed its end: it is exiting, and so will this worker.
            debug!("relay: the master closed the relay");
        })?;
        Ok(())
    }
}

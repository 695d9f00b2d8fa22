// SPDX-License-Identifier: GPL-2.0
//! A client of the QEMU Machine Protocol (`-qmp unix:PATH`): JSON objects,
//! one per line. Commands get `{"return": ...}` or `{"error": ...}`; events
//! (`{"event": ...}`) arrive in between, and are kept, in order, for the
//! test to look at.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: Vec<Value>,
}

impl Qmp {
    /// Reads the greeting and leaves capabilities negotiation mode.
    pub fn new(stream: UnixStream) -> Result<Self> {
        let mut qmp = Qmp {
            writer: stream.try_clone().context("QMP socket")?,
            reader: BufReader::new(stream),
            events: Vec::new(),
        };
        let greeting = qmp.read()?;
        if greeting.get("QMP").is_none() {
            bail!("QMP: expected a greeting, got {greeting}");
        }
        qmp.execute("qmp_capabilities", Value::Null)?;
        Ok(qmp)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).context("QMP: reading")? == 0 {
            bail!("QMP: QEMU closed the socket");
        }
        serde_json::from_str(&line).with_context(|| format!("QMP: not JSON: {line:?}"))
    }

    /// Runs a command (`arguments` `Null` for none) and returns its `return`.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let mut msg = json!({ "execute": command });
        if !arguments.is_null() {
            msg["arguments"] = arguments;
        }
        self.writer
            .write_all(format!("{msg}\n").as_bytes())
            .with_context(|| format!("QMP: sending {command}"))?;
        loop {
            let mut answer = self.read()?;
            if answer.get("event").is_some() {
                self.events.push(answer);
            } else if let Some(ret) = answer.get_mut("return") {
                return Ok(ret.take());
            } else if let Some(err) = answer.get("error") {
                bail!(
                    "QMP {command}: {}",
                    err["desc"].as_str().unwrap_or("(no description)")
                );
            } else {
                bail!("QMP {command}: unexpected answer {answer}");
            }
        }
    }

    /// The `data` of the events called `name` received so far, in order.
    pub fn events(&self, name: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["event"] == name)
            .map(|e| &e["data"])
            .collect()
    }

    /// The `device-state` of every `VFIO_MIGRATION` event so far.
    pub fn vfio_states(&self) -> Vec<String> {
        self.events("VFIO_MIGRATION")
            .iter()
            .map(|d| d["device-state"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// `query-status`'s `status` (`running`, `paused`, `postmigrate`, ...).
    pub fn run_state(&mut self) -> Result<String> {
        let st = self.execute("query-status", Value::Null)?;
        Ok(st["status"].as_str().unwrap_or("?").to_string())
    }

    /// `query-migrate`.
    pub fn query_migrate(&mut self) -> Result<Value> {
        self.execute("query-migrate", Value::Null)
    }
}

/// The `status` of a `query-migrate` answer (`none` when there is none).
pub fn migration_status(info: &Value) -> &str {
    info["status"].as_str().unwrap_or("none")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_events_and_errors() {
        let (a, b) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            let mut r = BufReader::new(b.try_clone().unwrap());
            let mut w = b;
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut got = Vec::new();
            for answer in [
                r#"{"return": {}}"#,
                concat!(
                    r#"{"event": "VFIO_MIGRATION", "data": {"device-id": "dut", "device-state": "pre-copy"}}"#,
                    "\n",
                    r#"{"return": {"status": "running", "running": true}}"#
                ),
                r#"{"error": {"class": "GenericError", "desc": "no migration"}}"#,
            ] {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                got.push(serde_json::from_str::<Value>(&line).unwrap());
                writeln!(w, "{answer}").unwrap();
            }
            got
        });
        let mut qmp = Qmp::new(a).unwrap();
        assert_eq!(qmp.run_state().unwrap(), "running");
        assert_eq!(qmp.vfio_states(), ["pre-copy"]);
        let e = qmp.execute("migrate_cancel", Value::Null).unwrap_err();
        assert_eq!(e.to_string(), "QMP migrate_cancel: no migration");
        let sent = peer.join().unwrap();
        assert_eq!(sent[0], json!({"execute": "qmp_capabilities"}));
        assert_eq!(sent[1], json!({"execute": "query-status"}));
    }
}

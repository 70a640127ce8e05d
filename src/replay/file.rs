//! Records recorded to a file, one JSON object a line as `kcat -C -J` prints them, read a chunk
//! at a time.

use super::{Item, ReplayError, Replayed};
use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One line of a recorded file: `kcat -J`'s fields, plus base64 forms for binary records.
#[derive(serde::Deserialize)]
struct Line {
    topic: String,
    #[serde(default)]
    partition: i32,
    #[serde(default)]
    offset: i64,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    key_base64: Option<String>,
    #[serde(default)]
    payload_base64: Option<String>,
}

fn bytes(text: Option<String>, b64: Option<String>, what: &str) -> Result<Option<Vec<u8>>, String> {
    use base64::Engine as _;
    match (b64, text) {
        (Some(b), _) => base64::engine::general_purpose::STANDARD
            .decode(b.as_bytes())
            .map(Some)
            .map_err(|e| format!("{what}_base64 is not base64: {e}")),
        (None, t) => Ok(t.map(String::into_bytes)),
    }
}

pub struct Recording {
    path: PathBuf,
    lines: std::io::Lines<std::io::BufReader<std::fs::File>>,
    size: u64,
    /// Lines read so far, for the reasons of bad ones.
    line: usize,
}

impl Recording {
    pub fn open(path: &Path) -> Result<Self, ReplayError> {
        let file = std::fs::File::open(path).map_err(|e| failed(path, e.to_string()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Self {
            path: path.to_path_buf(),
            lines: std::io::BufReader::new(file).lines(),
            size,
            line: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Up to `max` records and the bytes they took, in the file's order; `None` at its end. A
    /// line that is not a record is an [`Item::Bad`] naming its number; blank lines are skipped.
    pub fn next_chunk(
        &mut self,
        max: usize,
        topics: &mut HashMap<String, Arc<str>>,
    ) -> Result<Option<(Vec<Item>, u64)>, ReplayError> {
        let mut items = Vec::new();
        let mut bytes_read = 0;
        while items.len() < max {
            let Some(line) = self.lines.next() else {
                break;
            };
            let line = line.map_err(|e| failed(&self.path, e.to_string()))?;
            self.line += 1;
            bytes_read += line.len() as u64 + 1;
            if line.trim().is_empty() {
                continue;
            }
            items.push(self.item(&line, topics));
        }
        Ok((!items.is_empty() || bytes_read > 0).then_some((items, bytes_read)))
    }

    fn item(&self, line: &str, topics: &mut HashMap<String, Arc<str>>) -> Item {
        let parsed = serde_json::from_str::<Line>(line)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                let key = bytes(r.key, r.key_base64, "key")?;
                let value = bytes(r.payload, r.payload_base64, "payload")?;
                Ok((r.topic, r.partition, r.offset, key, value))
            });
        match parsed {
            Ok((topic, partition, offset, key, value)) => Item::Record(Replayed {
                topic: topics
                    .entry(topic)
                    .or_insert_with_key(|t| Arc::from(t.as_str()))
                    .clone(),
                partition,
                offset,
                key,
                value,
                only_sink: None,
            }),
            Err(e) => Item::Bad(format!("line {}: not a recorded record: {e}", self.line)),
        }
    }
}

fn failed(path: &Path, reason: String) -> ReplayError {
    ReplayError::Read {
        topic: path.display().to_string(),
        reason,
    }
}

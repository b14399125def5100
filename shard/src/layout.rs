//! The node layout file `<data_dir>/node.toml`: the core and partition counts a data directory
//! was created with. Both are fixed at creation (each core's engine holds the partitions it
//! owns), so a later start with other counts is refused with an error saying what to do.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ShardError;

/// File name of the layout inside the data directory.
pub const LAYOUT_FILE: &str = "node.toml";
/// Version of the layout file format.
const LAYOUT_FORMAT_VERSION: u32 = 1;

/// What `node.toml` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLayout {
    /// Format version of this file.
    pub format_version: u32,
    /// Cores (shards) the data directory was created with.
    pub cores: usize,
    /// Partitions the data directory was created with.
    pub partitions: u32,
}

/// Reads `<data_dir>/node.toml`; None when the data directory is new.
pub fn read_layout(data_dir: &Path) -> Result<Option<NodeLayout>, ShardError> {
    let path = data_dir.join(LAYOUT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ShardError::Io {
                op: "read",
                path,
                source,
            });
        }
    };
    let layout: NodeLayout = toml::from_str(&text).map_err(|e| ShardError::Layout {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    if layout.format_version != LAYOUT_FORMAT_VERSION {
        return Err(ShardError::Layout {
            path,
            detail: format!(
                "format version {} is not supported (this build reads {LAYOUT_FORMAT_VERSION})",
                layout.format_version
            ),
        });
    }
    Ok(Some(layout))
}

/// Returns the stored layout if it matches the requested counts, or creates it on first start.
pub(crate) fn ensure_layout(
    data_dir: &Path,
    cores: usize,
    partitions: u32,
) -> Result<NodeLayout, ShardError> {
    if let Some(stored) = read_layout(data_dir)? {
        if stored.cores != cores || stored.partitions != partitions {
            return Err(ShardError::LayoutMismatch {
                dir: data_dir.to_path_buf(),
                stored_cores: stored.cores,
                stored_partitions: stored.partitions,
                cores,
                partitions,
            });
        }
        return Ok(stored);
    }
    let layout = NodeLayout {
        format_version: LAYOUT_FORMAT_VERSION,
        cores,
        partitions,
    };
    write_layout(data_dir, &layout)?;
    Ok(layout)
}

/// Writes the layout durably: temporary file, fsync, rename, fsync of the directory.
fn write_layout(data_dir: &Path, layout: &NodeLayout) -> Result<(), ShardError> {
    let io = |op: &'static str, path: &Path| {
        let path: PathBuf = path.to_path_buf();
        move |source| ShardError::Io { op, path, source }
    };
    std::fs::create_dir_all(data_dir).map_err(io("create directory", data_dir))?;
    let text = toml::to_string(layout).map_err(|e| ShardError::Layout {
        path: data_dir.join(LAYOUT_FILE),
        detail: e.to_string(),
    })?;
    let tmp = data_dir.join(format!("{LAYOUT_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(text.as_bytes()).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("fsync", &tmp))?;
    let path = data_dir.join(LAYOUT_FILE);
    std::fs::rename(&tmp, &path).map_err(io("rename", &path))?;
    std::fs::File::open(data_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io("fsync", data_dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_created_once_and_then_enforced() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_layout(dir.path()).unwrap(), None);
        let created = ensure_layout(dir.path(), 2, 1024).unwrap();
        assert_eq!(read_layout(dir.path()).unwrap(), Some(created));
        assert_eq!(ensure_layout(dir.path(), 2, 1024).unwrap(), created);
        let err = ensure_layout(dir.path(), 4, 1024).unwrap_err();
        assert!(err.to_string().contains("start with --cores 2"), "{err}");
    }
}

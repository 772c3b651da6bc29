//! TEMPORARY shim until the box branch's path rules move here.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathRefusal {
    #[error("FILE_PATH has an empty, `.` or `..` component")]
    DotOrEmptyComponent,
}

impl PathRefusal {
    pub fn code(&self) -> &'static str {
        "path_dot_component"
    }
}

pub fn relative_path(file_path: &str) -> Result<String, PathRefusal> {
    let rel = file_path.strip_prefix('/').unwrap_or(file_path);
    if rel
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(PathRefusal::DotOrEmptyComponent);
    }
    Ok(rel.to_owned())
}

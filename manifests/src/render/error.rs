//! What can go wrong while rendering: each error names the file and,
//! where it helps, the field or object and what to do.

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("failed to read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {path} does not exist")]
    Missing { file: String, path: String },
    #[error("{path} leaves the repository")]
    OutsideRoot { path: String },
    #[error("{file}: not valid YAML: {message}")]
    Yaml { file: String, message: String },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error(
        "{file}: `{field}` is not supported by ferry's renderer; use the supported fields (see docs) or render with kustomize and commit plain YAML"
    )]
    Unsupported { file: String, field: String },
    #[error("{file}: patch does not apply to {object}: {message}")]
    Patch {
        file: String,
        object: String,
        message: String,
    },
    #[error("{file}: patch matches no object ({target})")]
    NoTarget { file: String, target: String },
    #[error("{file}: two objects are both {id}; names must be unique per kind and namespace")]
    Duplicate { file: String, id: String },
}

//! ferry-pipelines: the CI side of ferry. Train and gate the model, bump
//! the image an environment runs, review environment changes in pull
//! requests with the controller's own renderer, and report to GitHub.

pub mod bump;
pub mod gate;
pub mod github;
pub mod golden;
pub mod init;
pub mod promote;
pub mod publish;
pub mod review;

//! The health gate: kstatus rules and fail-fast evidence ([`health`],
//! pure), reading what they judge from the cluster ([`observe`]), the
//! HTTP checks ([`checks`]), and each new pod verified before it takes
//! traffic ([`verify`]), its predictions included ([`predictions`]).

pub mod checks;
pub mod health;
pub mod observe;
pub mod predictions;
pub mod verify;

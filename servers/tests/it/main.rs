//! Integration tests: the real servers on `127.0.0.1:0`, called over real gRPC.

mod approval;
mod backup;
mod binary;
mod common;
mod notification;
mod processing;
mod services;
mod validation;

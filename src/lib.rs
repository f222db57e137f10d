//! A memory-aware MCP image server: prompts in, images out through Gemini,
//! streamed into Azure Blob Storage or a local folder without ever holding
//! a whole image in memory. See docs/ARCHITECTURE.md for the data path.

#![deny(clippy::print_stdout, clippy::dbg_macro)]

pub mod app;
pub mod auth;
pub mod capped;
pub mod cli;
pub mod config;
pub mod extract;
pub mod gemini;
pub mod inputs;
pub mod mcp;
pub mod memory;
pub mod metrics;
pub mod pipeline;
pub mod preview;
pub mod secret;
pub mod store;
pub mod tasks;
pub mod testkit;
pub mod transport;

// The allocator tests need jemalloc in the unit-test binary too; the server
// binary declares it in main.rs.
#[cfg(test)]
#[global_allocator]
static GLOBAL: memory::alloc::Allocator = memory::alloc::ALLOCATOR;
